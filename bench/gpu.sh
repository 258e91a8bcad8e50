#!/usr/bin/env bash
# Build and check the CUDA backend on a GPU machine, in one command.
#
#   bash bench/gpu.sh              on the GPU machine, in the repo root: configure a Release build with
#                                  CUDA (build-gpu/), build, run the CUDA tests (ctest -R cuda), then
#                                  `streamdiff bench ops --backend cuda` when that exists; logs go to
#                                  $OUT (or build-gpu/out); a short summary is printed last.
#   bash bench/gpu.sh fetch-deps   on the dev machine (Debian 12, network): download the .debs of the
#                                  build dependencies into build-debs/ (git-ignored, ~15 MB), for a GPU
#                                  machine that has no network and lacks them. Pass "build-debs" in the
#                                  device tool's `carry`; this script unpacks them into a private sysroot
#                                  (build-gpu-sysroot/) only when pkg-config cannot find a dependency.
#
# Environment knobs:
#   SD_GPU_SANITIZE=memcheck|racecheck|synccheck|initcheck  also run test_cuda_ops under compute-sanitizer
#   SD_CUDA_TEST_FILTER=substr     only the op cases whose name contains substr (e.g. attn, conv)
#   SD_GPU_BUILD=dir               build directory (default build-gpu)
#
# What a later session should add here, once the op tests pass on the GPU: UNet forward time in ms at
# batch 1, 2 and 4 (SD-Turbo / SD 1.5 shapes, 512x512: latent 64x64, fp16, median of >= 20 runs after
# warm-up, CUDA-event timed), the same for the VAE decoder and TAESD, and PyTorch (diffusers, fp16, SDPA)
# side by side on the same machine in the same table.
set -uo pipefail

ROOT=$(pwd)
BUILD=${SD_GPU_BUILD:-build-gpu}
DEBS=build-debs
SYSROOT=$ROOT/build-gpu-sysroot
PKGS=(libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libcjson-dev libcjson1 libutf8proc-dev libutf8proc2
      libpng-dev libpng16-16 zlib1g-dev libjpeg62-turbo-dev libjpeg62-turbo pkgconf pkgconf-bin libpkgconf3)
MODULES=(libcjson libutf8proc libpng libjpeg openblas)

if [ "${1:-}" = "fetch-deps" ]; then
  mkdir -p "$DEBS" && cd "$DEBS" || exit 1
  apt-get download "${PKGS[@]}" || { echo "gpu.sh: apt-get download failed (apt-get update first?)" >&2; exit 1; }
  du -sh . && ls
  exit 0
fi

OUT=${OUT:-$ROOT/$BUILD/out}
mkdir -p "$OUT"
log() { echo "== $*"; }
summary=()

log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
nvcc --version 2>&1 | tail -2
cmake --version | head -1
gcc --version | head -1

# ---- dependencies: use the system's when pkg-config finds them all, else the carried .debs
deps_ok() { command -v pkg-config >/dev/null && pkg-config --exists "${MODULES[@]}"; }
if ! deps_ok; then
  if ls "$DEBS"/*.deb >/dev/null 2>&1; then
    log "dependencies missing: unpacking $DEBS/*.deb into $SYSROOT"
    mkdir -p "$SYSROOT"
    for f in "$DEBS"/*.deb; do dpkg -x "$f" "$SYSROOT" || echo "gpu.sh: cannot unpack $f" >&2; done
    A=x86_64-linux-gnu
    export PATH="$SYSROOT/usr/bin:$PATH"
    export PKG_CONFIG_SYSROOT_DIR="$SYSROOT"
    export PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/$A/pkgconfig:$SYSROOT/usr/lib/$A/openblas-openmp/pkgconfig:$SYSROOT/usr/share/pkgconfig"
    export PKG_CONFIG_PATH="$PKG_CONFIG_LIBDIR"
    export CPATH="$SYSROOT/usr/include:$SYSROOT/usr/include/$A${CPATH:+:$CPATH}"
    L="$SYSROOT/usr/lib/$A:$SYSROOT/lib/$A:$SYSROOT/usr/lib/$A/openblas-openmp"
    export LIBRARY_PATH="$L${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LD_LIBRARY_PATH="$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # dpkg -x creates no update-alternatives links: make libopenblas.so.0 findable by its soname
    ln -sf openblas-openmp/libopenblas.so.0 "$SYSROOT/usr/lib/$A/libopenblas.so.0" 2>/dev/null
    deps_ok || echo "gpu.sh: pkg-config still misses some of: ${MODULES[*]}" >&2
  else
    echo "gpu.sh: pkg-config cannot find all of ${MODULES[*]} and there is no $DEBS/: run" \
         "'bash bench/gpu.sh fetch-deps' on the dev machine and carry $DEBS" >&2
  fi
fi

# ---- configure + build
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
[ -f "$BUILD/CMakeCache.txt" ] && GEN=() # keep the generator of an existing build dir
log "configure ($BUILD)"
t0=$(date +%s)
if cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSD_CUDA=ON >"$OUT/configure.log" 2>&1; then
  if grep -q "^CMAKE_CUDA_COMPILER:.*nvcc" "$BUILD/CMakeCache.txt"; then
    summary+=("configure: ok, with CUDA")
  else
    summary+=("configure: ok but WITHOUT CUDA (nvcc not found?): the CUDA test will only skip")
  fi
else
  tail -30 "$OUT/configure.log"
  summary+=("configure: FAILED (see configure.log)")
fi
log "build"
if cmake --build "$BUILD" -j "$(nproc)" >"$OUT/build.log" 2>&1; then
  summary+=("build: ok in $(( $(date +%s) - t0 )) s (configure + build)")
else
  grep -E "error|Error" "$OUT/build.log" | head -30
  summary+=("build: FAILED (see build.log)")
fi

# ---- tests
log "ctest -R cuda"
(cd "$BUILD" && ctest -R cuda --output-on-failure -V) >"$OUT/ctest_cuda.log" 2>&1
rc=$?
grep -E "^[0-9]+: " "$OUT/ctest_cuda.log" | sed 's/^[0-9]*: //' | tail -150
summary+=("ctest -R cuda: rc=$rc, $(grep -E '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$OUT/ctest_cuda.log" | sed 's/^[0-9]*: //' | tr '\n' ' ')")

if [ -n "${SD_GPU_SANITIZE:-}" ] && command -v compute-sanitizer >/dev/null; then
  log "compute-sanitizer --tool $SD_GPU_SANITIZE (filter '${SD_CUDA_TEST_FILTER:-}')"
  compute-sanitizer --tool "$SD_GPU_SANITIZE" --error-exitcode 9 "$BUILD/tests/test_cuda_ops" \
    >"$OUT/sanitize.log" 2>&1
  src=$?
  tail -25 "$OUT/sanitize.log"
  summary+=("compute-sanitizer $SD_GPU_SANITIZE: rc=$src")
fi

# ---- op benchmark (src/cli/cmd_bench.c belongs to another engineer: call it, tolerate failure)
log "streamdiff bench ops --backend cuda"
if [ -x "$BUILD/streamdiff" ]; then
  timeout 300 "$BUILD/streamdiff" bench ops --backend cuda >"$OUT/bench_ops.log" 2>&1
  brc=$?
  tail -40 "$OUT/bench_ops.log"
  summary+=("bench ops --backend cuda: rc=$brc (see bench_ops.log)")
else
  summary+=("bench ops: no streamdiff binary")
fi

log "summary"
head -1 "$OUT/gpu.txt" 2>/dev/null | sed 's/^/gpu: /'
for s in "${summary[@]}"; do echo "$s"; done
echo "logs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
[ $rc -eq 0 ]

#!/usr/bin/env bash
# Build and check the CUDA backend on a GPU machine, in one command.
#
#   bash bench/gpu.sh              on the GPU machine, in the repo root: configure a Release build with
#                                  CUDA (build-gpu/), build, run the CUDA tests and checks, then the
#                                  benchmarks (below); logs go to build-gpu/out (and, on the device machine,
#                                  as $OUT/gpu_logs.tgz with $OUT/gpu_table.md); a short
#                                  summary is printed last. A cold build for sm_80/89/90 takes minutes:
#                                  if one call of 10 minutes is too short, run it twice on the warm
#                                  machine (build-gpu/ is kept), the first with SD_GPU_SKIP_FULLSIZE=1.
#   bash bench/gpu.sh fetch-wheels on the dev machine: download diffusers (+ importlib_metadata, streamdiffusion)
#                                  wheels into .whl/ (git-ignored, ~6.5 MB) for the PyTorch columns; carry ".whl".
#   bash bench/gpu.sh fetch-deps   on the dev machine (Debian 12, network): download the .debs of the
#                                  build dependencies into build-debs/ (git-ignored, ~15 MB), for a GPU
#                                  machine that has no network and lacks them (FFmpeg and libwebsockets are
#                                  not among them: the build uses -DSD_FULL=OFF, so it has no video files and
#                                  no `serve` there, which the GPU work does not need). Pass "build-debs" in the
#                                  device tool's `carry`; this script unpacks them into a private sysroot
#                                  (build-gpu-sysroot/) only when pkg-config cannot find a dependency.
#
# Environment knobs:
#   SD_GPU_SANITIZE=memcheck|racecheck|synccheck|initcheck  also run test_cuda_ops under compute-sanitizer
#   SD_CUDA_TEST_FILTER=substr     only the op cases whose name contains substr (e.g. attn, conv)
#   SD_GPU_BUILD=dir               build directory (default build-gpu)
#   SD_GPU_ARCHS=90                CUDA architectures to build (default 90: H100/H200; CI builds 80;89;90)
#
# What it runs after the build: ctest -R cuda (op tests, test_cuda_models on the tiny models: their parts, the
# stream graph replay, stream groups, the async pipeline, and the ControlNet cases: txt2img / img2img with the
# tiny SD1.5 and SDXL ControlNets, streams and a stream group with a canny ControlNet per frame), `streamdiff
# check --backend cuda tests/data/cases` (every model family against diffusers' references, fp16 tolerance;
# the own_*controlnet* cases too),
# random full-size SD-turbo / SD1.5 / TAESD written by bench_gen_arch into $SD_GPU_MODELS_DIR (/tmp/sd-random),
# test_cuda_models on them (CUDA vs CPU at 256x256), UNet forward ms at batch 1/2/4 at 512x512 and TAESD
# encode/decode (bench_cpu --backend cuda), PyTorch fp16 (diffusers, SDPA) for the same parts with the GEMM peak
# and each engine's TFLOP/s (bench/gpu_torch.py -> $LOGS/gpu_table.md), and `streamdiff bench stream --backend
# cuda` (1-step img2img / txt2img, 1..16 batched streams, 2-step RCFG self) next to StreamDiffusion itself
# (bench/streamdiffusion_ref.py, same model and settings). SD_GPU_SKIP_FULLSIZE=1 stops after
# the checks. Device call: carry ["build-debs", ".whl"], e.g.
#   bash bench/gpu.sh
set -uo pipefail

ROOT=$(pwd)
BUILD=${SD_GPU_BUILD:-build-gpu}
DEBS=build-debs
SYSROOT=$ROOT/build-gpu-sysroot
PKGS=(libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libcjson-dev libcjson1 libutf8proc-dev libutf8proc2
      libpng-dev libpng16-16 zlib1g-dev libjpeg62-turbo-dev libjpeg62-turbo pkgconf pkgconf-bin libpkgconf3)
MODULES=(libcjson libutf8proc libpng libjpeg openblas)

if [ "${1:-}" = "fetch-wheels" ]; then
  # diffusers (the PyTorch side of the speed table) and StreamDiffusion (issue 7's comparison) for the GPU
  # machine's Python 3.12, which has torch, transformers, huggingface_hub and safetensors but not these
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    diffusers==0.42.1 importlib_metadata streamdiffusion==0.1.1 || exit 1
  du -sh .whl && ls .whl
  exit 0
fi

if [ "${1:-}" = "fetch-deps" ]; then
  mkdir -p "$DEBS" && cd "$DEBS" || exit 1
  apt-get download "${PKGS[@]}" || { echo "gpu.sh: apt-get download failed (apt-get update first?)" >&2; exit 1; }
  du -sh . && ls
  exit 0
fi

# every log and result goes to LOGS; on the device machine (its $OUT, which returns at most 8 files) they
# come back as one archive, gpu_logs.tgz, next to the speed table
DEVICE_OUT=${OUT:-}
LOGS=$ROOT/$BUILD/out
mkdir -p "$LOGS"
log() { echo "== $*"; }
summary=()

log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee "$LOGS/gpu.txt"
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
if cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSD_CUDA=ON -DSD_FULL=OFF \
    -DSD_CUDA_ARCHS="${SD_GPU_ARCHS:-90}" >"$LOGS/configure.log" 2>&1; then
  if grep -q "^CMAKE_CUDA_COMPILER:.*nvcc" "$BUILD/CMakeCache.txt"; then
    summary+=("configure: ok, with CUDA")
  else
    summary+=("configure: ok but WITHOUT CUDA (nvcc not found?): the CUDA test will only skip")
  fi
else
  tail -30 "$LOGS/configure.log"
  summary+=("configure: FAILED (see configure.log)")
fi
log "build"
if cmake --build "$BUILD" -j "$(nproc)" >"$LOGS/build.log" 2>&1; then
  summary+=("build: ok in $(( $(date +%s) - t0 )) s (configure + build)")
else
  grep -E "error|Error" "$LOGS/build.log" | head -30
  summary+=("build: FAILED (see build.log)")
fi

# ---- tests
log "ctest -R cuda"
(cd "$BUILD" && ctest -R cuda --output-on-failure -V) >"$LOGS/ctest_cuda.log" 2>&1
rc=$?
grep -E "^[0-9]+: " "$LOGS/ctest_cuda.log" | sed 's/^[0-9]*: //' | grep -vE "^\[ (RUN|  OK) \]" | tail -120
summary+=("ctest -R cuda: rc=$rc, $(grep -E '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$LOGS/ctest_cuda.log" | sed 's/^[0-9]*: //' | tr '\n' ' ')")

if [ -n "${SD_GPU_SANITIZE:-}" ] && command -v compute-sanitizer >/dev/null; then
  log "compute-sanitizer --tool $SD_GPU_SANITIZE (filter '${SD_CUDA_TEST_FILTER:-}')"
  compute-sanitizer --tool "$SD_GPU_SANITIZE" --error-exitcode 9 "$BUILD/tests/test_cuda_ops" \
    >"$LOGS/sanitize.log" 2>&1
  src=$?
  tail -25 "$LOGS/sanitize.log"
  summary+=("compute-sanitizer $SD_GPU_SANITIZE: rc=$src")
fi

# ---- models against the fixtures' references, in fp16 on the GPU
log "streamdiff check --backend cuda tests/data/cases"
if [ -x "$BUILD/streamdiff" ]; then
  timeout 300 "$BUILD/streamdiff" check --backend cuda tests/data/cases >"$LOGS/check_cuda.log" 2>&1
  crc=$?
  grep -E "^[a-z0-9_]+: (PASS|FAIL)|^[0-9]+ cases" "$LOGS/check_cuda.log" | tail -25
  summary+=("check --backend cuda tests/data/cases: rc=$crc, $(tail -1 "$LOGS/check_cuda.log")")
fi

# ---- full-size random-weight models (bench/bench_gen_arch: the GPU machine has no weights and no network)
MODELS_DIR=${SD_GPU_MODELS_DIR:-/tmp/sd-random}
GEN="$BUILD/bench/bench_gen_arch"
if [ -x "$GEN" ] && [ "${SD_GPU_SKIP_FULLSIZE:-0}" != 1 ]; then
  log "random full-size models in $MODELS_DIR"
  mkdir -p "$MODELS_DIR"
  [ -f "$MODELS_DIR/sd-turbo/unet/diffusion_pytorch_model.safetensors" ] ||
    "$GEN" bench/arch/sd-turbo "$MODELS_DIR/sd-turbo" --tokenizer tests/data/models/tiny-sd2/tokenizer >/dev/null
  [ -f "$MODELS_DIR/sd15/unet/diffusion_pytorch_model.safetensors" ] ||
    "$GEN" bench/arch/sd15 "$MODELS_DIR/sd15" --tokenizer tests/data/models/tiny-sd15/tokenizer >/dev/null
  [ -f "$MODELS_DIR/taesd/diffusion_pytorch_model.safetensors" ] || "$GEN" bench/arch/taesd "$MODELS_DIR/taesd" >/dev/null
  ls "$MODELS_DIR"

  log "full-size models: CUDA vs CPU (test_cuda_models, 256x256)"
  SD_GPU_MODELS="$MODELS_DIR/sd-turbo:$MODELS_DIR/sd15" SD_GPU_TAESD="$MODELS_DIR/taesd" SD_GPU_SIZE=256 \
    SD_TEST_DATA=tests/data OMP_NUM_THREADS=$(nproc) timeout 900 "$BUILD/tests/test_cuda_models" \
    >"$LOGS/cuda_models_fullsize.log" 2>&1
  frc=$?
  grep -E "^  [a-z0-9_.-]+ +(unet|clip|vae|taesd)|passed" "$LOGS/cuda_models_fullsize.log"
  summary+=("full-size CUDA vs CPU: rc=$frc, $(tail -1 "$LOGS/cuda_models_fullsize.log")")

  log "UNet / TAESD speed: streamdiff CUDA backend"
  : >"$LOGS/ours.jsonl"
  for m in sd-turbo sd15; do
    for b in 1 2 4; do
      timeout 300 "$BUILD/bench/bench_cpu" --backend cuda --part unet --model "$MODELS_DIR/$m" --size 512 \
        --batch $b --reps 20 2>>"$LOGS/bench_errors.log" | sed "s/^{/{\"model\": \"$m\", /" >>"$LOGS/ours.jsonl"
    done
  done
  for p in taesd-encode taesd; do
    timeout 300 "$BUILD/bench/bench_cpu" --backend cuda --part $p --taesd "$MODELS_DIR/taesd" --size 512 --reps 20 \
      2>>"$LOGS/bench_errors.log" >>"$LOGS/ours.jsonl"
  done
  cat "$LOGS/ours.jsonl" | cut -c1-200

  log "PyTorch fp16 side by side (diffusers from .whl when carried)"
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  PYTHONUNBUFFERED=1 timeout 600 python3 bench/gpu_torch.py --models "sd-turbo=$MODELS_DIR/sd-turbo,sd15=$MODELS_DIR/sd15" \
    --taesd "$MODELS_DIR/taesd" --size 512 --batches 1,2,4 --reps 20 --ours "$LOGS/ours.jsonl" \
    --json "$LOGS/gpu_bench.json" --table "$LOGS/gpu_table.md" 2>"$LOGS/gpu_torch.log"
  tail -5 "$LOGS/gpu_torch.log"
  summary+=("speed table: $LOGS/gpu_table.md")

  log "stream engine on the GPU (sd-turbo architecture, TAESD, 512x512)"
  timeout 600 "$BUILD/streamdiff" bench stream -m "$MODELS_DIR/sd-turbo" --taesd "$MODELS_DIR/taesd" --backend cuda \
    --size 512 --t-index 35 --cfg-type none --modes img2img,txt2img,streams --streams 1,2,4,8,16 --frames 100 \
    --warmup 10 --json "$LOGS/stream_1step.json" >"$LOGS/stream_1step.log" 2>&1
  cat "$LOGS/stream_1step.log"
  timeout 300 "$BUILD/streamdiff" bench stream -m "$MODELS_DIR/sd-turbo" --taesd "$MODELS_DIR/taesd" --backend cuda \
    --size 512 --t-index 32,45 --cfg-type self --modes img2img --frames 100 --warmup 10 \
    --json "$LOGS/stream_2step.json" >"$LOGS/stream_2step.log" 2>&1
  cat "$LOGS/stream_2step.log"
  log "the same 1-step img2img without graphs (what the graph saves)"
  timeout 300 "$BUILD/streamdiff" bench stream -m "$MODELS_DIR/sd-turbo" --taesd "$MODELS_DIR/taesd" --backend cuda \
    --size 512 --t-index 35 --cfg-type none --modes img2img --frames 100 --warmup 10 --no-graphs \
    --json "$LOGS/stream_nographs.json" >"$LOGS/stream_nographs.log" 2>&1
  grep -E "^[0-9]+x[0-9]+ " "$LOGS/stream_nographs.log"

  log "StreamDiffusion itself on the same model, settings and GPU (PyPI streamdiffusion, fp16, SDPA, TAESD)"
  PYTHONUNBUFFERED=1 timeout 600 python3 bench/streamdiffusion_ref.py --model "$MODELS_DIR/sd-turbo" \
    --taesd "$MODELS_DIR/taesd" --size 512 --frames 100 --warmup 10 --json "$LOGS/streamdiffusion.json" \
    >"$LOGS/streamdiffusion.log" 2>&1
  grep -E "^\||fps|Error|error" "$LOGS/streamdiffusion.log" | tail -12
  summary+=("StreamDiffusion reference: $LOGS/streamdiffusion.log (compare with stream_1step.log / stream_2step.log)")
fi

log "summary"
head -1 "$LOGS/gpu.txt" 2>/dev/null | sed 's/^/gpu: /'
for s in "${summary[@]}"; do echo "$s"; done
echo "logs in $LOGS: $(cd "$LOGS" && ls | tr '\n' ' ')"
if [ -n "$DEVICE_OUT" ] && [ "$DEVICE_OUT" != "$LOGS" ]; then
  tar czf "$DEVICE_OUT/gpu_logs.tgz" -C "$LOGS" . && echo "archived to \$OUT/gpu_logs.tgz"
  [ -f "$LOGS/gpu_table.md" ] && cp "$LOGS/gpu_table.md" "$DEVICE_OUT/"
fi
[ $rc -eq 0 ]

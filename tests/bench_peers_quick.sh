#!/usr/bin/env bash
# bench/cpu_peers.py --quick: every path of the CPU peers benchmark (streamdiff, PyTorch and OpenVINO at fp32 /
# bf16 / int8; UNet step, UNet + 1 / 2 ControlNets, TAESD, 1-step txt2img; SD1.5 and SDXL) on the tiny models
# of tests/data at 64^2, then checks the JSON and the tables. Minutes (OpenVINO conversion and int8
# calibration of the tiny models, cached in the build folder after the first run): label slow.
# Python: $SD_BENCH_PYTHON, else ../venv-bench/bin/python beside the checkout, else python3; skips (77) when it
# lacks torch, diffusers, transformers, openvino or nncf (optional libraries).
set -euo pipefail
BUILD="$1"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${SD_BENCH_PYTHON:-}"
if [ -z "$PY" ]; then
    for c in "$ROOT/../venv-bench/bin/python" python3; do
        if command -v "$c" >/dev/null 2>&1; then PY="$c"; break; fi
    done
fi
if ! "$PY" -c "import torch, diffusers, transformers, openvino, nncf, numpy" >/dev/null 2>&1; then
    echo "bench_peers_quick: SKIP: ${PY:-no python} lacks torch/diffusers/transformers/openvino/nncf (set SD_BENCH_PYTHON)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$ROOT"
"$PY" bench/cpu_peers.py --quick --bin "$BUILD/bench/bench_cpu" --cache "$BUILD/bench-quick-cache" \
    --json "$tmp/q.json" >"$tmp/table.md" 2>"$tmp/log" || { tail -50 "$tmp/log"; exit 1; }
"$PY" - "$tmp/q.json" "$tmp/table.md" <<'PYEOF'
import json, sys
out = json.load(open(sys.argv[1]))
runs = {(r['engine'], r['precision'], r['model'], r['part']) for r in out['runs'] if r['ms_min'] > 0}
want = []
for p in ('fp32', 'bf16'):
    for e in ('streamdiff', 'torch'):
        want += [(e, p, 'tiny-sd15', x) for x in ('unet', 'cnet1', 'cnet2', 'txt2img')]
        want += [(e, p, 'tiny-sdxl', x) for x in ('unet', 'txt2img')] + [(e, p, 'taesd-tiny', 'taesd')]
for p in ('fp32', 'bf16', 'int8'):
    want += [('openvino', p, m, x) for m in ('tiny-sd15', 'tiny-sdxl') for x in ('unet', 'txt2img')]
    want += [('openvino', p, 'taesd-tiny', 'taesd')]
missing = [w for w in want if w not in runs]
assert not missing, f'rows missing from the JSON: {missing}'
assert not any(r['engine'] == 'openvino' and r['part'].startswith('cnet') for r in out['runs'])
g = {(c['model'], c['part'], c['size']): c['gflop'] for c in out['counts']}
u, c1, c2 = g[('tiny-sd15', 'unet', 64)], g[('tiny-sd15', 'cnet1', 64)], g[('tiny-sd15', 'cnet2', 64)]
assert 0 < u < c1 < c2, f'ControlNet FLOPs should add up: unet {u}, +1 net {c1}, +2 nets {c2}'
assert abs((c2 - u) - 2 * (c1 - u)) < 1e-3 * c2 + 2e-4, 'two nets should cost twice one'  # counts: 4 decimals
assert g.get(('tiny-sdxl', 'clip2', 0), 0) > 0, 'SDXL txt2img needs the second text encoder counted'
table = open(sys.argv[2]).read()
for s in ('| tiny-sdxl | txt2img | 64 |', '| tiny-sd15 | cnet2 | 64 |', 'streamdiff fp32', 'openvino int8'):
    assert s in table, f'table lacks {s!r}'
print(f'bench_peers_quick: ok ({len(out["runs"])} rows)')
PYEOF

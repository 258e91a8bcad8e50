#!/usr/bin/env python3
"""cpu_peers.py - streamdiff next to OpenVINO and PyTorch on the CPU, fp32 / bf16 / int8, in one run.

Parts (each row: one engine, one precision, one part, one model, one size, in its own process; the modules and
inputs of each part: bench/peers_models.py):
    unet      one UNet step, batch 1 (no CFG), latent size/8, random context [1,77,D], t = 999; SDXL: with a
              random pooled text embedding and the time ids (size, size, 0, 0, size, size)
    cnet1     the UNet step with 1 ControlNet (random control image, scale 1); cnet2: with 2 (each loaded
    cnet2     separately, residuals summed as MultiControlNet). Models with a ControlNet architecture in
              CONTROLNET_FOR (sd15: bench/arch/controlnet-sd15); streamdiff and PyTorch only
    taesd     TAESD (AutoencoderTiny) decode of a random [1,4,size/8,size/8] latent (SDXL models: TAESDXL)
    clip      the text encoder on one 77-token prompt
    txt2img   a 1-step text-to-image: tokenize + text encoder(s) + one Euler step (no CFG) + TAESD decode;
              SDXL: both text encoders (penultimate states concatenated, pooled projection) and TAESDXL
Engines and precisions:
    streamdiff   build/bench/bench_cpu; fp32 always; bf16 / int8 / auto are passed as --precision when this
                 build's bench_cpu knows the option (its usage text names it), else those rows are skipped
    torch        diffusers / transformers modules; fp32, or bf16 = weights and inputs in bfloat16 with
                 channels-last UNet / TAESD (oneDNN picks AMX on AMX CPUs)
    openvino     IRs converted from the same diffusers modules (ov.convert_model, dynamic spatial shape,
                 saved fp32; a component whose F16 file exceeds 2 GB (the SDXL UNet) is converted from its
                 F16 weights instead, which hold every weight exactly, so that the conversion fits in memory)
                 and reshaped static per size; fp32 = INFERENCE_PRECISION_HINT f32 (an AMX CPU
                 defaults to bf16), bf16 = hint bf16, int8 = nncf.quantize of the fp32 IR (random
                 calibration data at --int8-calib-size: a speed figure only; skipped when MemAvailable is
                 below ~2.3x the component's fp32 weights: the SDXL UNet needs ~25 GB), default hint
Models: random-weight full-size architectures of bench/arch (sd-turbo, sdxs-512, bk-sdm-tiny, bk-sdm-small,
sd15, sdxl-base), written once by build/bench/bench_gen_arch into the cache; every engine loads the same F16
files. TAESD: bench/arch/taesd (SDXL: bench/arch/taesdxl), the decoder of txt2img for every engine.
--quick: a rehearsal of every path on the tiny models of tests/data at 64^2 (ctest bench_peers_quick).
--no-amx: the "AVX512-BF16 CPU without AMX" rows (AMD Zen 4/5) as a PROXY on an AMX CPU: every engine held to
its AVX512-BF16 (and VNNI) units: streamdiff with SD_CPU_ISA=avx512bf16 (fp32 rows: its AVX-512 kernels),
OpenVINO and PyTorch's oneDNN with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (the kernels column shows
brgconv_avx512_bf16 instead of *_amx_*). The rows carry "isa_cap" and show as "<engine> noAMX" in the tables.
A proxy only: the core's AVX512-BF16 units are not a Zen core's (docs/precision.md, bf16 without AMX).

Per row it reports min and median of the timed runs (one warm-up, --reps timed runs per process, --rounds
processes per row; the engines alternate, in a rotating order per round), the process CPU time, peak RSS
(VmHWM of the process that loaded and ran the part; OpenVINO conversion and calibration run in separate
processes), the kernels the engine ran (OpenVINO: the runtime model's primitive types; PyTorch: oneDNN and
MKL verbose output of one extra run; streamdiff: the kernel set bench_cpu reports) and a 1024^3 sgemm probe
(numpy) taken just before the process, to show how busy the host was.
GFLOP per part are counted on PyTorch's meta device (peers_models.count: convolutions, linears,
attention products); GFLOP/s are set against peaks measured in the same run: fp32 sgemm (numpy, torch,
streamdiff's own GEMM), bf16 matmul (torch), int8 matmul (torch._int_mm, when it runs on the CPU).

Cache (--cache, default $STREAMDIFF_BENCH_CACHE or ~/.cache/streamdiff-bench): models/<arch>, models/taesd,
ov/<arch>/<component>-fp32.xml (or -f16.xml), ov/<arch>/<component>-int8-c<calib>.xml. Reruns reuse them.

Usage (repository root, after `make build` or a Release build in build/; Python with torch, diffusers,
transformers, openvino, nncf, numpy):
    python bench/cpu_peers.py --sizes 256 --reps 1 --parts unet          # smoke run
    python bench/cpu_peers.py --sizes 256 --json peers.json              # every engine and precision at 256
    python bench/cpu_peers.py --sizes 512 --precisions fp32,bf16 --parts unet,taesd --json peers.json --append
    python bench/cpu_peers.py --table peers.json                         # markdown tables from a JSON
    python bench/cpu_peers.py --quick                                    # rehearsal on tiny models (minutes)
    python bench/cpu_peers.py --models sdxl-base --sizes 512,1024 --parts unet --precisions fp32,bf16 \
        --exclude openvino:fp32 --json xl.json                           # SDXL UNet step (see BENCHMARKS.md)
    python bench/cpu_peers.py --models sd15 --sizes 256,512 --parts unet,cnet1,cnet2 --engines streamdiff,torch \
        --precisions fp32,bf16 --json cn.json                            # ControlNet: 0, 1, 2 nets
Options: --models, --engines, --precisions, --exclude, --parts, --sizes, --reps, --rounds, --threads, --no-amx, --int8-calib-size,
--no-int8-calibrate, --no-kernels, --no-peak, --no-count, --bin. Weights are never written inside the repository.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import peers_models  # noqa: E402 (bench/ on the path first)

PROMPT = 'a photograph of an astronaut riding a horse on the moon, highly detailed'
ENGINE_PRECISIONS = {'streamdiff': ('fp32', 'bf16', 'int8', 'auto'), 'torch': ('fp32', 'bf16'),
                     'openvino': ('fp32', 'bf16', 'int8')}
# --no-amx: streamdiff's kernel level and oneDNN's ISA cap (OpenVINO's CPU plugin, PyTorch) on an AMX CPU
NO_AMX_ENV = {'SD_CPU_ISA': 'avx512bf16', 'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_BF16'}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_rss_mib():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return float(line.split()[1]) / 1024.0
    return -1.0


def cache_dir(a):
    return os.path.expanduser(a.cache or os.environ.get('STREAMDIFF_BENCH_CACHE') or '~/.cache/streamdiff-bench')



def sigma_999():
    """Euler sigma of t = 999 for SD's scaled_linear schedule (beta 0.00085 .. 0.012)."""
    import numpy as np
    b = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1.0 - b)
    return float(((1 - ac[999]) / ac[999]) ** 0.5)


def timed(run, reps):
    times, cpu = [], []
    for r in range(reps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        if r:
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    return times, cpu


def result(a, engine, times, cpu, **extra):
    r = {'engine': engine, 'part': a.part, 'size': a.size, 'precision': a.precision,
         'ms_min': round(min(times), 2), 'ms_median': round(statistics.median(times), 2),
         'ms': [round(x, 2) for x in times], 'cpu_ms': [round(x, 2) for x in cpu],
         'peak_rss_mib': round(peak_rss_mib(), 1)}
    r.update(extra)
    print(json.dumps(r), flush=True)


# ----------------------------------------------------------------------------- torch child

def child_torch(a):
    import torch
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    dt = {'fp32': torch.float32, 'bf16': torch.bfloat16}[a.precision]
    if a.part == 'txt2img':
        run = peers_models.torch_txt2img(torch, a.model, a.taesd, a.size, dt, PROMPT)
    else:
        run = peers_models.torch_part(torch, a.part, a.model, a.taesd, a.size, dt, a.controlnet)[0]
    with torch.inference_mode():
        times, cpu = timed(run, a.reps)
        rss = peak_rss_mib()
        if a.kernels:  # one more run with oneDNN / MKL verbose on: the driver reads the lines from stdout
            sys.stdout.flush()
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), \
                    torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
                run()
            sys.stdout.flush()
    result(a, 'torch', times, cpu, peak_rss_mib_timed=round(rss, 1), torch=torch.__version__,
           threads=torch.get_num_threads(), cpu_capability=torch.backends.cpu.get_cpu_capability())


def parse_torch_kernels(stdout):
    """oneDNN primitive implementations and MKL functions of the verbose run, with their counts."""
    kinds, mkl, isa = {}, {}, None
    for line in stdout.splitlines():
        if line.startswith('onednn_verbose') and ',exec,' in line:
            f = line.split(',')
            i = f.index('exec')
            if i + 3 < len(f) and f[i + 3]:
                k = f'{f[i + 2]}:{f[i + 3]}'
                kinds[k] = kinds.get(k, 0) + 1
        elif line.startswith('onednn_verbose') and 'cpu,isa:' in line:
            isa = line.split('isa:', 1)[1].strip()
        elif re.match(r'MKL_VERBOSE [A-Za-z_0-9]+\(', line):
            fn = line.split()[1].split('(')[0]
            mkl[fn] = mkl.get(fn, 0) + 1
        elif line.startswith('MKL_VERBOSE') and 'Intel' in line and not isa:
            isa = line[len('MKL_VERBOSE '):].strip()
    return {'onednn': kinds, 'mkl': mkl, 'isa': isa}


# ----------------------------------------------------------------------------- OpenVINO

def ov_paths(a, comp):
    """The IR folder, the full-precision IR (converted from fp32, or from the F16 weights of a large component:
    peers_models.ov_source) and the int8 IR of one component."""
    d = os.path.join(cache_dir(a), 'ov', a.arch if comp != 'taesd' else os.path.basename(os.path.normpath(a.taesd)))
    src = peers_models.ov_source(comp, a.model, a.taesd)
    return d, os.path.join(d, f'{comp}-{src}.xml'), os.path.join(d, f'{comp}-int8-c{a.int8_calib_size}.xml')


def child_ov_prepare(a):
    """Converts one component to an IR (and, for int8, quantizes it), into the cache."""
    import openvino as ov
    comp = a.part
    d, full, int8 = ov_paths(a, comp)
    os.makedirs(d, exist_ok=True)
    t0 = time.time()
    did = []
    if not os.path.exists(full):
        import torch
        torch.set_num_threads(a.threads)
        src = peers_models.ov_source(comp, a.model, a.taesd)
        mod, ex, shapes = peers_models.ov_module(torch, ov, comp, a.model, a.taesd,
                                                 torch.float16 if src == 'f16' else torch.float32)
        with torch.no_grad():
            m = ov.convert_model(mod, example_input=tuple(ex), input=shapes)
        del mod
        ov.save_model(m, full, compress_to_fp16=False)  # the fp16 default also rounds non-weight constants
        did.append(f'convert (from {src} weights)')
        del m
    if a.precision == 'int8' and not os.path.exists(int8):
        import nncf
        core = ov.Core()
        m = core.read_model(full)
        samples = [peers_models.ov_inputs(comp, a.int8_calib_size, a.model, seed=s) for s in range(3)]
        q = nncf.quantize(m, nncf.Dataset(samples), subset_size=len(samples),
                          model_type=nncf.ModelType.TRANSFORMER if comp != 'taesd' else None)
        ov.save_model(q, int8, compress_to_fp16=False)
        did.append(f'int8 (calibration at {a.int8_calib_size}^2, 3 random samples)')
    print(json.dumps({'prepared': comp, 'did': did, 's': round(time.time() - t0, 1),
                      'peak_rss_mib': round(peak_rss_mib(), 1)}), flush=True)


def ov_compile(a, core, comp):
    import openvino as ov
    _, full, int8 = ov_paths(a, comp)
    m = core.read_model(int8 if a.precision == 'int8' else full)
    h = a.size // 8
    if comp in ('unet', 'taesd'):  # the latent is input 0; the other inputs are static already
        m.reshape({m.inputs[0]: ov.PartialShape([1, 4, h, h])})
    cfg = {'INFERENCE_NUM_THREADS': a.threads, 'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1}
    if a.precision in ('fp32', 'bf16'):
        cfg['INFERENCE_PRECISION_HINT'] = {'fp32': 'f32', 'bf16': 'bf16'}[a.precision]
    c = core.compile_model(m, 'CPU', cfg)
    kern = {}
    for op in c.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        lt = str(rt['layerType'].astype(str)) if 'layerType' in rt else '?'
        pt = str(rt['primitiveType'].astype(str)) if 'primitiveType' in rt else '?'
        if lt in ('Convolution', 'FullyConnected', 'MatMul', 'ScaledAttn', 'ScaledDotProductAttention',
                  'Deconvolution', 'GroupConvolution', 'Subgraph'):  # Subgraph: fused snippets (attention too)
            k = f'{lt}:{pt}'
            kern[k] = kern.get(k, 0) + 1
    return c, str(c.get_property('INFERENCE_PRECISION_HINT')), kern


def child_openvino(a):
    import numpy as np
    import openvino as ov
    core = ov.Core()
    comps = peers_models.ov_components(a.part, peers_models.is_xl(a.model))
    compiled, hints, kern = {}, {}, {}
    for comp in comps:
        compiled[comp], hints[comp], k = ov_compile(a, core, comp)
        for n, v in k.items():
            kern[n] = kern.get(n, 0) + v
    req = {c: compiled[c].create_infer_request() for c in comps}
    if a.part != 'txt2img':
        inp, r = peers_models.ov_inputs(comps[0], a.size, a.model), req[comps[0]]

        def run():
            return r.infer(inp)[0]
    else:
        run = peers_models.ov_txt2img(np, req, a.model, a.size, sigma_999(), PROMPT)
    times, cpu = timed(run, a.reps)
    caps = core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
    result(a, 'openvino', times, cpu, openvino=ov.get_version(), inference_precision=hints,
           kernels={'openvino': kern}, cpu_capabilities=list(caps))


# ----------------------------------------------------------------------------- peaks (child)

def child_peak(a):
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    n = 2048
    out = {}

    def best(fn, reps=5):
        fn()
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return 2.0 * n ** 3 / min(t) / 1e9
    A, B = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    out['numpy_sgemm_fp32'] = round(best(lambda: A @ B), 1)
    ta, tb = torch.from_numpy(A), torch.from_numpy(B)
    out['torch_mm_fp32'] = round(best(lambda: ta @ tb), 1)
    ha, hb = ta.bfloat16(), tb.bfloat16()
    out['torch_mm_bf16'] = round(best(lambda: ha @ hb), 1)
    try:
        ia = torch.randint(-64, 64, (n, n), dtype=torch.int8)
        ib = torch.randint(-64, 64, (n, n), dtype=torch.int8)
        out['torch_int_mm_int8'] = round(best(lambda: torch._int_mm(ia, ib)), 1)
    except Exception as e:  # noqa: BLE001 - not every build runs it on the CPU
        out['torch_int_mm_int8'] = None
        out['int8_note'] = str(e).splitlines()[0][:200]
    print(json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- driver

def probe_gflops(n=1024, reps=3):
    """A short fp32 sgemm in the driver (numpy): how busy the host is just before a process."""
    import numpy as np
    A = np.ones((n, n), np.float32)
    A @ A
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        A @ A
        t.append(time.perf_counter() - t0)
    return round(2.0 * n ** 3 / min(t) / 1e9, 1)


def run_child(cmd, env, timeout=None):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f'TIMEOUT after {timeout} s: {" ".join(cmd)}')
        return None, ''
    if p.returncode != 0:
        log(f'FAILED ({p.returncode}): {" ".join(cmd)}\n{p.stderr[-3000:]}')
        return None, p.stdout
    lines = [l for l in p.stdout.splitlines() if l.startswith('{')]
    if not lines:
        log(f'no result line from: {" ".join(cmd)}\n{p.stderr[-2000:]}')
        return None, p.stdout
    r = json.loads(lines[-1])
    r['wall_s'] = round(time.time() - t0, 1)
    return r, p.stdout


def streamdiff_precisions(binary):
    """The --precision values this bench_cpu takes (its usage text), always including fp32."""
    try:
        p = subprocess.run([binary], capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise SystemExit(f'{binary}: {e} (build it: cmake --build build --target bench_cpu)')
    u = p.stdout + p.stderr
    if '--precision' not in u:
        return ('fp32',)
    line = u.split('--precision', 1)[1].split('\n', 1)[0]  # e.g. " fp32|bf16|auto]"
    got = [x for x in ('fp32', 'bf16', 'int8', 'auto') if x in line]
    return tuple(got) or ('fp32',)


# the ControlNet architecture (bench/arch) of a model architecture, for the cnet1 / cnet2 parts
CONTROLNET_FOR = {'sd15': 'controlnet-sd15'}
# --quick: tiny models of tests/data instead of full-size architectures (name: (model, ControlNet, TAESD))
QUICK_MODELS = {'tiny-sd15': ('tiny-sd15', 'controlnet-tiny-sd15', 'taesd-tiny'),
                'tiny-sdxl': ('tiny-sdxl', None, 'taesd-tiny')}


def taesd_label(taesd_dir):
    """The model column of TAESD rows: '-' for the SD TAESD (as in earlier JSON files), else its folder name."""
    b = os.path.basename(os.path.normpath(taesd_dir))
    return '-' if b == 'taesd' else b


def ensure_models(a, archs):
    """{arch: {'model', 'taesd', 'controlnet'}}: bench_gen_arch writes each architecture, its TAESD (TAESDXL for
    SDXL) and its ControlNet once into the cache. --quick: the tiny models of tests/data."""
    if a.quick:
        data = os.path.join(ROOT, 'tests', 'data', 'models')
        return {m: {'model': os.path.join(data, QUICK_MODELS[m][0]), 'taesd': os.path.join(data, QUICK_MODELS[m][2]),
                    'controlnet': QUICK_MODELS[m][1] and os.path.join(data, QUICK_MODELS[m][1])} for m in archs}
    gen = os.path.join(os.path.dirname(a.bin), 'bench_gen_arch')
    tok = os.path.join(ROOT, 'tests', 'data', 'models')

    def made(arch):
        dst = os.path.join(cache_dir(a), 'models', arch)
        src = os.path.join(HERE, 'arch', arch)
        if not os.path.isdir(src):
            raise SystemExit(f'no architecture {src} (see bench/arch/README.md)')
        pipe = os.path.exists(os.path.join(src, 'model_index.json'))
        xl = pipe and peers_models.is_xl(src)
        marker = os.path.join(dst, 'tokenizer_2/vocab.json' if xl else 'model_index.json' if pipe else 'config.json')
        if not os.path.exists(marker):
            cmd = [gen, src, dst]
            if pipe:
                big = json.load(open(os.path.join(src, 'text_encoder', 'config.json')))['hidden_size'] == 1024
                cmd += ['--tokenizer', os.path.join(tok, 'tiny-sdxl' if xl else 'tiny-sd2' if big else 'tiny-sd15',
                                                    'tokenizer')]
            log(f'writing random-weight {arch} to {dst}')
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            if xl:  # the second tokenizer (pads with "!") of SDXL
                shutil.copytree(os.path.join(tok, 'tiny-sdxl', 'tokenizer_2'), os.path.join(dst, 'tokenizer_2'),
                                dirs_exist_ok=True)
        return dst
    out = {}
    for arch in archs:
        m = made(arch)
        out[arch] = {'model': m, 'taesd': a.taesd or made('taesdxl' if peers_models.is_xl(m) else 'taesd'),
                     'controlnet': made(CONTROLNET_FOR[arch]) if arch in CONTROLNET_FOR and a.need_cnet else None}
    return out


def mem_available_gib():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) / 2 ** 20
    return 0.0


def kernel_summary(r):
    """A short text of the kernels a row ran."""
    if r['engine'] == 'streamdiff':
        return f'{r.get("isa", "?")}' + (f' ({r["kernels"]})' if isinstance(r.get('kernels'), str) else '')
    k = r.get('kernels') or {}
    if r['engine'] == 'openvino':
        ov_k = k.get('openvino', {})
        by = {}
        for name, n in ov_k.items():
            lt, pt = name.split(':', 1)
            by.setdefault(lt, {})[pt] = by.get(lt, {}).get(pt, 0) + n
        return '; '.join(f'{lt} {max(v, key=v.get)}' for lt, v in sorted(by.items()))
    parts = []
    one = k.get('onednn', {})
    by = {}
    for name, n in one.items():
        kind, impl = name.split(':', 1)
        by.setdefault(kind, {})[impl] = by.get(kind, {}).get(impl, 0) + n
    parts += [f'{kind} {max(v, key=v.get)}' for kind, v in sorted(by.items())]
    if k.get('mkl'):
        parts.append('MKL ' + ','.join(sorted(k['mkl'])))
    return '; '.join(parts) or '?'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--child', choices=['torch', 'openvino', 'ov-prepare', 'peak'])
    ap.add_argument('--part', default='unet')
    ap.add_argument('--precision', default='fp32')
    ap.add_argument('--model')
    ap.add_argument('--arch')
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--kernels', type=int, default=1)
    ap.add_argument('--models', default='sd-turbo,sdxs-512')
    ap.add_argument('--sizes', default='256,512')
    ap.add_argument('--parts', default='unet,taesd,txt2img')
    ap.add_argument('--engines', default='streamdiff,torch,openvino')
    ap.add_argument('--precisions', default='fp32,bf16,int8')
    ap.add_argument('--exclude', default='', help='ENGINE:PRECISION pairs not to run, e.g. openvino:fp32 (memory)')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--rounds', type=int, default=1, help='processes per row; the engine order rotates per round')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--cache')
    ap.add_argument('--taesd')
    ap.add_argument('--bin', default=os.path.join(ROOT, 'build', 'bench', 'bench_cpu'))
    ap.add_argument('--int8-calib-size', type=int, default=256,
                    help='image size of the random calibration data of the int8 models (SD-turbo UNet: 256: '
                         '~9 GB, ~2-5 min; 512: ~11 GB, ~4 min on an idle host); the int8 IR serves every size')
    ap.add_argument('--no-int8-calibrate', action='store_true', help='skip int8 rows whose model is not cached')
    ap.add_argument('--no-kernels', action='store_true')
    ap.add_argument('--no-peak', action='store_true')
    ap.add_argument('--no-count', action='store_true')
    ap.add_argument('--no-amx', action='store_true',
                    help='hold every engine to AVX512-BF16/VNNI (no AMX): the proxy of a Zen 4/5 CPU on an AMX CPU')
    ap.add_argument('--timeout', type=int, default=1800, help='seconds per process')
    ap.add_argument('--json')
    ap.add_argument('--append', action='store_true', help='add to the runs of an existing --json file')
    ap.add_argument('--table', metavar='JSON', help='print the markdown tables of a JSON file and exit')
    ap.add_argument('--controlnet', help=argparse.SUPPRESS)  # children: the ControlNet folder of cnet1 / cnet2
    ap.add_argument('--quick', action='store_true',
                    help='rehearsal: the tiny models of tests/data (tiny-sd15 with a ControlNet, tiny-sdxl; TAESD '
                         'taesd-tiny) at 64^2, every part, 1 timed run, int8 calibrated at 64^2, no peaks; the '
                         'OpenVINO IRs in <cache>/quick')
    a = ap.parse_args()
    if a.child == 'torch':
        return child_torch(a)
    if a.child == 'openvino':
        return child_openvino(a)
    if a.child == 'ov-prepare':
        return child_ov_prepare(a)
    if a.child == 'peak':
        return child_peak(a)
    if a.table:
        with open(a.table) as f:
            return print_tables(json.load(f))

    os.environ.setdefault('OPENBLAS_NUM_THREADS', str(a.threads))  # the driver's probe (numpy), before import
    if a.quick:
        a.models, a.sizes, a.parts = ','.join(QUICK_MODELS), '64', 'unet,cnet1,cnet2,taesd,txt2img'
        a.reps, a.rounds, a.int8_calib_size, a.no_peak = 1, 1, 64, True
        a.cache = os.path.join(cache_dir(a), 'quick')
    archs = [m for m in a.models.split(',') if m]
    sizes = [int(s) for s in a.sizes.split(',') if s]
    parts = [p for p in a.parts.split(',') if p]
    engines = [e for e in a.engines.split(',') if e]
    precs = [p for p in a.precisions.split(',') if p]
    for e in engines:
        if e not in ENGINE_PRECISIONS:
            raise SystemExit(f'unknown engine {e} (streamdiff, torch, openvino)')
    for p in parts:
        if p not in ('unet', 'taesd', 'clip', 'txt2img') + tuple(peers_models.CNET_PARTS):
            raise SystemExit(f'unknown part {p} (unet, cnet1, cnet2, taesd, clip, txt2img)')
    a.need_cnet = any(p in peers_models.CNET_PARTS for p in parts)
    sd_precs = streamdiff_precisions(a.bin) if 'streamdiff' in engines else ()
    dirs = ensure_models(a, archs)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    if a.no_amx:  # every child: streamdiff's kernel level, oneDNN's ISA cap (OpenVINO's CPU plugin and PyTorch)
        env.update(NO_AMX_ENV)
    me = [sys.executable, os.path.abspath(__file__)]

    out = {'conditions': {}, 'counts': [], 'peak': {}, 'prepare': [], 'runs': [], 'skipped': []}
    if a.append and a.json and os.path.exists(a.json):
        with open(a.json) as f:
            out = json.load(f)
    cond = {'threads': a.threads, 'reps': a.reps, 'rounds': a.rounds, 'cpu': cpu_name(), 'cpu_flags': cpu_flags(),
            'time_utc_start': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()), 'load_before': os.getloadavg(),
            'streamdiff_precisions': list(sd_precs), 'int8_calib_size': a.int8_calib_size,
            'versions': versions(), 'git': git_rev(), 'isa_cap': NO_AMX_ENV if a.no_amx else None}
    out['conditions'].setdefault('invocations', []).append(cond)

    if not a.no_count:
        have = {(c['model'], c['part'], c['size']) for c in out['counts']}
        for arch in archs:
            d = dirs[arch]
            text = 'clip' in parts or 'txt2img' in parts
            for s in sizes:
                for p in ('unet', 'taesd', 'clip', 'clip2') + tuple(peers_models.CNET_PARTS):
                    key = (arch if p != 'taesd' else taesd_label(d['taesd']), p, s if p[:4] != 'clip' else 0)
                    if key in have or (p[:4] == 'clip' and not text) or (p == 'clip2' and not
                                                                          peers_models.is_xl(d['model'])) or \
                            (p in peers_models.CNET_PARTS and (p not in parts or not d['controlnet'])):
                        continue
                    c = peers_models.count(p, d['model'], d['taesd'], s, d['controlnet'])
                    out['counts'].append({'model': key[0], 'part': p, 'size': key[2], 'gflop': round(c[0], 4),
                                          'gb_moved': round(c[1], 3), 'weights_f32_mib': round(c[2], 1)})
                    have.add(key)
                    log(f'count {key[0]:12s} {p:6s} {s}: {c[0]:8.1f} GFLOP, weights {c[2]:7.1f} MiB (F32)')

    def peaks():
        """GEMM peaks, kept as the best seen over the run (measured at its start and its end: the host is noisy)"""
        if a.no_peak:
            return
        got = {}
        r, _ = run_child(me + ['--child', 'peak', '--threads', str(a.threads)], env)
        if r:
            got.update({k: v for k, v in r.items() if k != 'wall_s'})
        if 'streamdiff' in engines:
            r, _ = run_child([a.bin, '--part', 'sgemm', '--size', '2048', '--reps', '5', '--threads',
                              str(a.threads)], env)
            if r:
                got.update(streamdiff_own_gemm_fp32=r['own_gflops'], openblas_sgemm_fp32=r['openblas_gflops'],
                           streamdiff_isa=r['own_isa'], openblas_core=r['openblas_core'])
            # the bf16 kernels' instruction peak (one core, registers only; bench_cpu --part bf16peak, if known)
            r, so = run_child([a.bin, '--part', 'bf16peak'], env)
            for line in (so or '').splitlines():
                if line.startswith('{') and '"gflops_per_core"' in line:
                    x = json.loads(line)
                    op = '_fp32_fma' if x.get('op') else ''  # the FMA yardstick rows: not a bf16 peak
                    got[f'streamdiff_{x["isa"]}{op}_instruction_peak_x{a.threads}'] = \
                        round(x['gflops_per_core'] * a.threads)
        for k, v in got.items():
            old = out['peak'].get(k)
            out['peak'][k] = max(old, v) if isinstance(v, (int, float)) and isinstance(old, (int, float)) else v
        out['peak'].setdefault('measured', []).append({'time_utc': time.strftime('%H:%M:%S', time.gmtime()),
                                                        **{k: v for k, v in got.items()
                                                           if isinstance(v, (int, float))}})
        log('peaks (GFLOP/s): ' + ', '.join(f'{k} {v}' for k, v in got.items()))
    peaks()

    excluded = {tuple(x.split(':', 1)) for x in a.exclude.split(',') if x}

    def rows_for(part):
        rows = []
        for e in engines:
            for p in precs:
                if p not in ENGINE_PRECISIONS[e] or (e, p) in excluded:
                    continue
                if e == 'streamdiff' and p not in sd_precs:
                    out['skipped'].append({'engine': e, 'precision': p, 'part': part,
                                           'why': 'bench_cpu has no --precision ' + p})
                    continue
                rows.append((e, p))
        return rows

    for s in sizes:
        for arch in archs:
            for part in parts:
                mdir, taesd, cnet = dirs[arch]['model'], dirs[arch]['taesd'], dirs[arch]['controlnet']
                if part == 'taesd' and any(dirs[x]['taesd'] == taesd for x in archs[:archs.index(arch)]):
                    continue  # one row per TAESD (TAESD, TAESDXL) for every model that uses it
                if part == 'clip' and s != sizes[0]:
                    continue
                n_nets = peers_models.CNET_PARTS.get(part, 0)
                if n_nets and not cnet:
                    out['skipped'].append({'engine': 'all', 'precision': 'all', 'part': part, 'model': arch,
                                           'why': 'no ControlNet architecture for this model (CONTROLNET_FOR)'})
                    continue
                xl = peers_models.is_xl(mdir)
                rows = rows_for(part)
                if n_nets and any(e == 'openvino' for e, _ in rows):
                    out['skipped'].append({'engine': 'openvino', 'precision': 'all', 'part': part, 'model': arch,
                                           'why': 'ControlNet rows compare streamdiff with PyTorch only'})
                    rows = [(e, p) for e, p in rows if e != 'openvino']
                pa = argparse.Namespace(cache=a.cache, arch=arch, int8_calib_size=a.int8_calib_size, model=mdir,
                                        taesd=taesd)
                # OpenVINO models first (conversion / calibration are not timed, separate processes)
                for e, p in rows:
                    if e != 'openvino':
                        continue
                    for comp in peers_models.ov_components(part, xl):
                        _, full, int8 = ov_paths(pa, comp)
                        if os.path.exists(full) and (p != 'int8' or os.path.exists(int8)):
                            continue
                        if p == 'int8' and not os.path.exists(int8):
                            # nncf holds ~2.3x the fp32 weights (SD-turbo UNet: 9 GiB at 256; SDXL UNet: ~25 GiB)
                            w_gib = 2 * os.path.getsize(peers_models.ov_weights_file(comp, mdir, taesd)) / 2 ** 30
                            need = max(4.0, 2.3 * w_gib + (3.0 * (a.int8_calib_size / 512) ** 2 if comp == 'unet'
                                                           else 0))
                            if a.no_int8_calibrate or mem_available_gib() < need:
                                why = 'not cached and --no-int8-calibrate' if a.no_int8_calibrate else \
                                    f'calibration needs ~{need:.0f} GiB, {mem_available_gib():.0f} available'
                                out['skipped'].append({'engine': e, 'precision': p, 'part': part, 'model': arch,
                                                       'why': why})
                                continue
                        log(f'openvino: preparing {arch} {comp} ({p}) ...')
                        r, _ = run_child(me + ['--child', 'ov-prepare', '--part', comp, '--precision', p, '--arch',
                                               arch, '--model', mdir, '--taesd', taesd, '--threads', str(a.threads),
                                               '--int8-calib-size', str(a.int8_calib_size)]
                                         + (['--cache', a.cache] if a.cache else []), env, a.timeout)
                        if r:
                            r.update(model=arch, precision=p)
                            out['prepare'].append(r)
                            log(f'  {r["did"]} in {r["s"]} s, peak RSS {r["peak_rss_mib"]:.0f} MiB')
                got = {}
                for rnd in range(a.rounds):
                    order = rows[rnd % len(rows):] + rows[:rnd % len(rows)] if rows else []
                    for e, p in order:
                        if e == 'openvino':
                            if not all(os.path.exists(ov_paths(pa, c)[2 if p == 'int8' else 1])
                                       for c in peers_models.ov_components(part, xl)):
                                continue
                        if e == 'streamdiff':
                            cmd = [a.bin, '--part', 'controlnet' if n_nets else part, '--size', str(s), '--reps',
                                   str(a.reps), '--threads', str(a.threads), '--model', mdir, '--taesd', taesd]
                            if n_nets:
                                cmd += ['--controlnet', cnet, '--nets', str(n_nets)]
                            if len(sd_precs) > 1:
                                cmd += ['--precision', p]
                        else:
                            cmd = me + ['--child', e, '--part', part, '--size', str(s), '--reps', str(a.reps),
                                        '--threads', str(a.threads), '--model', mdir, '--taesd', taesd,
                                        '--precision', p, '--arch', arch, '--int8-calib-size',
                                        str(a.int8_calib_size), '--kernels', '0' if a.no_kernels else '1'] + \
                                (['--cache', a.cache] if a.cache else []) + (['--controlnet', cnet] if n_nets else [])
                        probe = probe_gflops()
                        la = os.getloadavg()
                        r, stdout = run_child(cmd, env, a.timeout)
                        if not r:
                            continue
                        r.update(engine=e, precision=p, model=arch if part != 'taesd' else taesd_label(taesd), size=s,
                                 part=part, taesd_model=taesd_label(taesd),
                                 probe_gflops=probe, load_before=[round(x, 2) for x in la],
                                 time_utc=time.strftime('%H:%M:%S', time.gmtime()))
                        if a.no_amx:
                            r['isa_cap'] = NO_AMX_ENV
                        if e == 'torch' and not a.no_kernels:
                            r['kernels'] = parse_torch_kernels(stdout)
                        k = (e, p)
                        if k in got:  # rounds: one row, every timed run
                            g = got[k]
                            g['ms'] += r['ms']
                            g['cpu_ms'] += r['cpu_ms']
                            g['probe_gflops'] = g['probe_gflops'] + [probe]
                            g['peak_rss_mib'] = max(g['peak_rss_mib'], r['peak_rss_mib'])
                            g['ms_min'] = round(min(g['ms']), 2)
                            g['ms_median'] = round(statistics.median(g['ms']), 2)
                        else:
                            r['probe_gflops'] = [probe]
                            got[k] = r
                        log(f'{e:10s} {p:4s} {r["model"]:12s} {part:7s} {s}: min {r["ms_min"]:9.1f} ms  median '
                            f'{r["ms_median"]:9.1f} ms  peak RSS {r["peak_rss_mib"]:7.0f} MiB  probe {probe} '
                            f'GFLOP/s  load {la[0]:.1f}  [{kernel_summary(r)[:120]}]')
                out['runs'] += list(got.values())
                if a.json:  # after every row group: a session that ends early keeps what it measured
                    write_json(a.json, out)
    peaks()
    cond['time_utc_end'] = time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())
    cond['load_after'] = os.getloadavg()
    if a.json:
        write_json(a.json, out)
        log(f'wrote {a.json}')
    return print_tables(out)


def write_json(path, out):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)


def label(r):
    """the engine as the tables name it: rows held to AVX512-BF16 (--no-amx) apart from the others"""
    return r['engine'] + (' noAMX' if r.get('isa_cap') else '')


def print_tables(out):
    counts = {(c['model'], c['part'], c['size']): c['gflop'] for c in out.get('counts', [])}
    pk = out.get('peak', {})
    fp32_peak = max([v for k, v in pk.items() if k.endswith('fp32') and isinstance(v, (int, float))] or [0])
    if pk:
        print('GEMM peaks (GFLOP/s, 2048^3, best seen in the run): ' + ', '.join(
            f'{k} {v}' for k, v in pk.items() if k != 'measured') + '\n')
    bf16_peak = pk.get('torch_mm_bf16') or 0
    # int8: torch._int_mm need not reach the AMX int8 rate; the rows are set against the better of the two probes
    peaks = {'fp32': fp32_peak, 'bf16': bf16_peak, 'int8': max(pk.get('torch_int_mm_int8') or 0, bf16_peak)}

    def gflop(r):
        m, p, s = r['model'], r['part'], r['size']
        if p == 'txt2img':  # SDXL: both text encoders (clip2 is counted for SDXL models only)
            parts = [counts.get((m, 'unet', s)), counts.get((r.get('taesd_model', '-'), 'taesd', s)),
                     counts.get((m, 'clip', 0))]
            return sum(parts) + counts.get((m, 'clip2', 0), 0) if all(x is not None for x in parts) else None
        return counts.get((m, p, s if p != 'clip' else 0))
    runs = sorted(out.get('runs', []), key=lambda r: (r['size'], r['model'], r['part'], label(r), r['precision']))
    print('| model | part | size | engine | precision | GFLOP | ms min | ms median | GFLOP/s | % of peak | '
          'peak RSS MiB | probe GFLOP/s | kernels |')
    print('|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|')
    for r in runs:
        g = gflop(r)
        rate = g / r['ms_min'] * 1e3 if g else None
        prec = r['precision']
        if prec == 'auto':  # streamdiff's auto: bf16 kernels where the CPU has them
            prec = 'bf16' if any(k in str(r.get('isa', '')) for k in ('amx', 'bf16')) else 'fp32'
        peak = peaks.get(prec) or 0
        pr = r.get('probe_gflops') or []
        cells = [r['model'], r['part'], r['size'], label(r), r['precision'], f'{g:.1f}' if g else '-',
                 f'{r["ms_min"]:.0f}', f'{r["ms_median"]:.0f}', f'{rate:.0f}' if rate else '-',
                 f'{rate / peak * 100:.0f}%' if rate and peak else '-', f'{r["peak_rss_mib"]:.0f}',
                 f'{min(pr):.0f}-{max(pr):.0f}' if pr else '-', kernel_summary(r)]
        print('| ' + ' | '.join(str(c) for c in cells) + ' |')
    # compact: one line per (model, part, size), min ms per engine / precision
    cols = sorted({(label(r), r['precision']) for r in runs},
                  key=lambda k: (['streamdiff', 'torch', 'openvino'].index(k[0].split()[0]), k[0], k[1]))
    if cols:
        print('\n| model | part | size | ' + ' | '.join(f'{e} {p}' for e, p in cols) + ' |')
        print('|---|---|---:|' + '---:|' * len(cols))
        keys = sorted({(r['size'], r['model'], r['part']) for r in runs})
        for s, m, p in keys:
            cell = {(label(r), r['precision']): r for r in runs if (r['size'], r['model'], r['part']) == (s, m, p)}
            print(f'| {m} | {p} | {s} | ' + ' | '.join(
                f'{cell[c]["ms_min"]:.0f} ({cell[c]["ms_median"]:.0f})' if c in cell else '-' for c in cols) + ' |')
        print(f'\nms: min (median) of the timed runs. Peaks used for "% of peak" (GFLOP/s): fp32 {peaks["fp32"]:.0f} '
              f'(best fp32 GEMM), bf16 {peaks["bf16"]:.0f} (torch bf16 matmul), int8 {peaks["int8"]:.0f} (the better of '
              f'torch._int_mm and the bf16 matmul).')
    seen = set()
    for sk in out.get('skipped', []):
        key = (sk.get('engine'), sk.get('precision'), sk.get('model', ''), sk.get('why'))
        if key not in seen:
            seen.add(key)
            print(f'- skipped: {sk["engine"]} {sk["precision"]}{" " + sk["model"] if sk.get("model") else ""}: '
                  f'{sk["why"]}')
    return 0


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return '?'


def cpu_flags():
    want = ('avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile',
            'amx_bf16', 'amx_int8', 'avx_vnni')
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    have = set(line.split(':', 1)[1].split())
                    return [w for w in want if w in have]
    except OSError:
        pass
    return []


def versions():
    v = {'python': sys.version.split()[0]}
    from importlib import metadata
    for pkg in ('torch', 'openvino', 'nncf', 'diffusers', 'transformers', 'numpy'):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    return v


def git_rev():
    try:
        return subprocess.run(['git', '-C', ROOT, 'describe', '--always', '--dirty'], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return None


if __name__ == '__main__':
    sys.exit(main())

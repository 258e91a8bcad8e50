#!/usr/bin/env python3
"""cpu_vs_torch.py - streamdiff vs PyTorch (diffusers/transformers, float32) on the CPU, in one run.

What it measures, on the same full-size random-weight models (tools/gen_fullsize.py: SD1.5 and SD-turbo
(SD2.1 architecture) diffusers folders, F16 files) and the same thread count:
    unet      one UNet step, batch 1 (no CFG), latent size/8, random context [1,77,D]
    taesd     TAESD (AutoencoderTiny, default config, random weights) decode of a [1,4,size/8,size/8] latent
    clip      the text encoder on one 77-token prompt
    txt2img   a full 1-step text-to-image: CLIP + one Euler UNet step (guidance 0) + TAESD decode
at each --sizes (512 and 256). Every (engine, part, model, size) runs in its own process, so the peak RSS
reported (VmHWM: the peak resident set of that process image) belongs to that part alone; loading is not timed; one warm-up run, then --reps
timed runs (min and median reported). streamdiff runs build/bench/bench_cpu (bench/bench_cpu.c); PyTorch
runs this script as a child (--child torch).

It also counts, with PyTorch on the meta device (no memory, no compute): FLOPs of each part
(torch.utils.flop_counter: 2*M*N*K per product, convolutions and attention included; norms and
elementwise ops not counted) and bytes (every aten op's inputs + outputs, i.e. the traffic with no cache
reuse, and the weight bytes), and the machine's GEMM peak (bench_cpu --part sgemm: OpenBLAS with the
environment's OPENBLAS_CORETYPE, OpenBLAS with SkylakeX kernels, and streamdiff's own GEMM).

Usage (repository root; Release build in build/ or pass --bin):
    python3 bench/cpu_vs_torch.py                            # everything: ~15 min on 2 cores
    python3 bench/cpu_vs_torch.py --models sd-turbo --sizes 512 --parts unet --reps 5
    python3 bench/cpu_vs_torch.py --count-only               # FLOP/byte table only (seconds)
    python3 bench/cpu_vs_torch.py --json bench_cpu.json      # also write all results
Options: --fullsize DIR (default $SD_FULLSIZE or /work/fullsize), --taesd DIR (default: a random TAESD
written once to <fullsize>-bench/taesd), --threads N (default 2), --f16 (streamdiff keeps F16 weights),
--isa avx512|avx2|blas (SD_CPU_ISA for streamdiff).
Weights are never written inside the repository.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- torch child

def peak_rss_mib():
    """VmHWM of this process image. (ru_maxrss survives execve: a child would inherit its parent's peak.)"""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def torch_setup(threads):
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


def child_torch(a):
    torch = torch_setup(a.threads)
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel
    size, h = a.size, a.size // 8
    gen = torch.Generator().manual_seed(0)
    run = None
    if a.part == 'unet':
        unet = UNet2DConditionModel.from_pretrained(os.path.join(a.model, 'unet'), torch_dtype=torch.float32).eval()
        x = torch.randn(1, unet.config.in_channels, h, h, generator=gen)
        ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen)
        t = torch.tensor([999.0])
        run = lambda: unet(x, t, encoder_hidden_states=ctx).sample
    elif a.part == 'taesd':
        taesd = AutoencoderTiny.from_pretrained(a.taesd, torch_dtype=torch.float32).eval()
        z = torch.randn(1, 4, h, h, generator=gen)
        run = lambda: taesd.decode(z).sample
    elif a.part == 'clip':
        te = CLIPTextModel.from_pretrained(os.path.join(a.model, 'text_encoder'), torch_dtype=torch.float32).eval()
        ids = torch.tensor([[49406] + [320 + i * 37 for i in range(1, 16)] + [49407] * 61])
        run = lambda: te(ids).last_hidden_state
    elif a.part == 'txt2img':
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.vae = AutoencoderTiny.from_pretrained(a.taesd, torch_dtype=torch.float32)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        prompt = 'a photograph of an astronaut riding a horse on the moon, highly detailed'
        run = lambda: pipe(prompt, num_inference_steps=1, guidance_scale=0.0, height=size, width=size,
                           output_type='np', generator=torch.Generator().manual_seed(42)).images
    else:
        raise SystemExit('unknown part ' + a.part)
    times, cpu = [], []
    with torch.inference_mode():
        for r in range(a.reps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            if r:
                times.append((time.perf_counter() - t0) * 1e3)
                cpu.append((time.process_time() - c0) * 1e3)
    rss = peak_rss_mib()
    print(json.dumps({'engine': 'torch', 'part': a.part, 'size': size, 'ms_min': round(min(times), 2),
                      'ms_median': round(statistics.median(times), 2), 'ms': [round(x, 2) for x in times],
                      'cpu_ms': [round(x, 2) for x in cpu], 'peak_rss_mib': round(rss, 1),
                      'torch': torch.__version__, 'threads': torch.get_num_threads()}))


# ----------------------------------------------------------------------------- counting (meta device)

def count_call(fn, modules):
    """(GFLOP, GB moved by aten ops, weight MiB in F32) of fn() over modules built on the meta device."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Bytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = str(func)
            if not any(v in name for v in ('view', 'reshape', 't.default', 'transpose', 'permute', 'expand',
                                           'unsqueeze', 'squeeze', 'detach', 'alias', 'slice', 'select')):
                def tb(x):
                    if isinstance(x, torch.Tensor):
                        return x.numel() * x.element_size()
                    if isinstance(x, (list, tuple)):
                        return sum(tb(y) for y in x)
                    return 0
                self.bytes += tb(args) + tb(kwargs or {}) + tb(out)
            return out

    wbytes = sum(p.numel() * 4 for m in modules for p in m.parameters())
    with torch.device('meta'), torch.inference_mode():
        fc = FlopCounterMode(display=False)
        with fc:
            fn()
        bm = Bytes()
        with bm:
            fn()
    return fc.get_total_flops() / 1e9, bm.bytes / 1e9, wbytes / 2**20


def count_part(model_dir, part, size, taesd_dir):
    """(GFLOP, GB moved by aten ops, weight MB in F32) of one part, on the meta device."""
    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    h = size // 8
    with torch.device('meta'):
        if part == 'unet':
            cfg = UNet2DConditionModel.load_config(os.path.join(model_dir, 'unet'))
            m = UNet2DConditionModel.from_config(cfg)
            inputs = (torch.empty(1, m.config.in_channels, h, h), torch.tensor([999.0]),
                      torch.empty(1, 77, m.config.cross_attention_dim))
            fn = lambda: m(inputs[0], inputs[1], encoder_hidden_states=inputs[2])
        elif part == 'taesd':
            m = AutoencoderTiny.from_config(AutoencoderTiny.load_config(taesd_dir))
            z = torch.empty(1, 4, h, h)
            fn = lambda: m.decode(z)
        elif part == 'clip':
            m = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(model_dir, 'text_encoder')))
            ids = torch.zeros(1, 77, dtype=torch.long)
            fn = lambda: m(ids)
        else:
            return None
    return count_call(fn, [m])


# ----------------------------------------------------------------------------- driver

def ensure_taesd(path):
    if os.path.exists(os.path.join(path, 'config.json')):
        return path
    import torch
    from diffusers import AutoencoderTiny
    torch.manual_seed(1234)
    m = AutoencoderTiny()  # the default config is the TAESD architecture
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    os.makedirs(path, exist_ok=True)
    m.save_pretrained(path)
    log(f'wrote a random-weight TAESD to {path}')
    return path


def run_child(cmd, env):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        log(f'FAILED ({p.returncode}): {" ".join(cmd)}\n{p.stderr[-3000:]}')
        return None
    line = [l for l in p.stdout.splitlines() if l.startswith('{')][-1]
    r = json.loads(line)
    r['wall_s'] = round(time.time() - t0, 1)
    return r


def loadavg():
    return tuple(round(x, 2) for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--child', choices=['torch'])
    ap.add_argument('--part', default='unet')
    ap.add_argument('--model')
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--models', default='sd15,sd-turbo')
    ap.add_argument('--sizes', default='512,256')
    ap.add_argument('--parts', default='unet,taesd,clip,txt2img')
    ap.add_argument('--engines', default='streamdiff,streamdiff-f16,torch')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--fullsize', default=os.environ.get('SD_FULLSIZE', '/work/fullsize'))
    ap.add_argument('--taesd')
    ap.add_argument('--bin', default=os.path.join(ROOT, 'build', 'bench', 'bench_cpu'))
    ap.add_argument('--f16', action='store_true')
    ap.add_argument('--isa')
    ap.add_argument('--json')
    ap.add_argument('--count-only', action='store_true')
    ap.add_argument('--no-count', action='store_true')
    ap.add_argument('--no-peak', action='store_true')
    a = ap.parse_args()
    if a.child:
        return child_torch(a)

    fullsize = a.fullsize.rstrip('/')
    taesd = ensure_taesd(a.taesd or fullsize + '-bench/taesd')
    models = [m for m in a.models.split(',') if m]
    sizes = [int(s) for s in a.sizes.split(',') if s]
    parts = [p for p in a.parts.split(',') if p]
    engines = [e for e in a.engines.split(',') if e]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    if a.isa:
        env['SD_CPU_ISA'] = a.isa
    out = {'conditions': {'threads': a.threads, 'reps': a.reps, 'load_before': loadavg(),
                          'OPENBLAS_CORETYPE': os.environ.get('OPENBLAS_CORETYPE'), 'f16_weights': a.f16,
                          'SD_CPU_ISA': a.isa, 'cpu': cpu_name(), 'time_utc': time.strftime('%Y-%m-%d %H:%M:%S',
                                                                                            time.gmtime())},
           'counts': [], 'peak': [], 'runs': []}

    if not a.no_count:
        for m in models:
            for s in sizes:
                for p in ('unet', 'taesd', 'clip'):
                    if (p not in parts and not a.count_only) or (p == 'taesd' and m != models[0]) or \
                            (p == 'clip' and s != sizes[0]):
                        continue  # TAESD is shared, the text encoder does not depend on the size
                    c = count_part(os.path.join(fullsize, m), p, s, taesd)
                    if c:
                        out['counts'].append({'model': m, 'part': p, 'size': s, 'gflop': round(c[0], 2),
                                              'gb_moved': round(c[1], 3), 'weights_f32_mib': round(c[2], 1)})
                        log(f'count {m:9s} {p:6s} {s}: {c[0]:8.1f} GFLOP  {c[1]:7.2f} GB moved  '
                            f'weights {c[2]:7.1f} MiB (F32)')
    if a.count_only:
        return finish(a, out)

    if not a.no_peak and 'streamdiff' in engines:
        for core in (os.environ.get('OPENBLAS_CORETYPE') or None, 'SkylakeX'):
            e = dict(env)
            if core:
                e['OPENBLAS_CORETYPE'] = core
            r = run_child([a.bin, '--part', 'sgemm', '--size', '2048', '--reps', '5', '--threads', str(a.threads)], e)
            if r:
                out['peak'].append(r)
                log(f'sgemm 2048^3: OpenBLAS ({r["openblas_core"]}) {r["openblas_gflops"]} GFLOP/s, '
                    f'streamdiff GEMM ({r["own_isa"]}) {r["own_gflops"]} GFLOP/s')

    for m in models:
        mdir = os.path.join(fullsize, m)
        for s in sizes:
            for p in parts:
                if p == 'clip' and s != sizes[0]:
                    continue  # the text encoder does not depend on the image size
                for eng in engines:
                    if eng.startswith('streamdiff'):
                        f16 = a.f16 or eng == 'streamdiff-f16'
                        cmd = [a.bin, '--part', p, '--size', str(s), '--reps', str(a.reps), '--threads',
                               str(a.threads), '--model', mdir, '--taesd', taesd] + (['--f16'] if f16 else [])
                    else:
                        cmd = [sys.executable, os.path.abspath(__file__), '--child', 'torch', '--part', p, '--size',
                               str(s), '--reps', str(a.reps), '--threads', str(a.threads), '--model', mdir,
                               '--taesd', taesd]
                    if p == 'taesd' and m != models[0]:
                        continue  # TAESD is the same for both models
                    la = loadavg()
                    r = run_child(cmd, env)
                    if not r:
                        continue
                    r.update(engine=eng, model=m if p != 'taesd' else '-', load_before=la, load_after=loadavg())
                    out['runs'].append(r)
                    log(f'{eng:10s} {r["model"]:9s} {p:7s} {s}: min {r["ms_min"]:9.1f} ms  median '
                        f'{r["ms_median"]:9.1f} ms  cpu {statistics.median(r["cpu_ms"]):9.1f} ms  '
                        f'peak RSS {r["peak_rss_mib"]:7.1f} MiB  (load {la[0]})')
    out['conditions']['load_after'] = loadavg()
    return finish(a, out)


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return '?'


def finish(a, out):
    # summary table: streamdiff vs torch per (model, part, size)
    rows = {}
    for r in out['runs']:
        rows.setdefault((r['model'], r['part'], r['size']), {})[r['engine']] = r
    counts = {(c['model'], c['part'], c['size']): c for c in out['counts']}
    peak = max([p['openblas_gflops'] for p in out['peak']] + [p['own_gflops'] for p in out['peak']] or [0])
    if rows:
        # times: min of the runs (the least disturbed by other jobs); the JSON has every run
        print('| model | part | size | GFLOP | streamdiff ms | streamdiff F16-kept ms | torch ms | speed-up | '
              'streamdiff GFLOP/s | % of peak | RSS MiB streamdiff | RSS MiB F16-kept | RSS MiB torch |')
        print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
        f = lambda v, fmt: (fmt % v) if v is not None else '-'
        for (m, p, s), e in rows.items():
            sd, sh, th = e.get('streamdiff'), e.get('streamdiff-f16'), e.get('torch')
            c = counts.get((m if p != 'taesd' else a.models.split(',')[0], p, s))
            gf = c['gflop'] if c and p != 'txt2img' else None
            sdm, shm, thm = (x['ms_min'] if x else None for x in (sd, sh, th))
            best = min([v for v in (sdm, shm) if v] or [0]) or None
            rate = gf / sdm * 1e3 if gf and sdm else None
            print(f'| {m} | {p} | {s} | {f(gf, "%.1f")} | {f(sdm, "%.0f")} | {f(shm, "%.0f")} | {f(thm, "%.0f")} | '
                  f'{f(thm / best if best and thm else None, "%.2fx")} | {f(rate, "%.0f")} | '
                  f'{f(rate / peak * 100 if rate and peak else None, "%.0f%%")} | '
                  f'{f(sd["peak_rss_mib"] if sd else None, "%.0f")} | {f(sh["peak_rss_mib"] if sh else None, "%.0f")} | '
                  f'{f(th["peak_rss_mib"] if th else None, "%.0f")} |')
        print(f'\n% of peak: of {peak:.0f} GFLOP/s, the best 2048^3 sgemm measured in this run (see "peak"); '
              f'speed-up: torch / the faster streamdiff mode.')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(out, f, indent=1)
        log(f'wrote {a.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

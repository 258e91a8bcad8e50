#!/usr/bin/env python3
"""gpu_torch.py - the PyTorch side of bench/gpu.sh, and the table that puts both side by side.

    python3 bench/gpu_torch.py --models sd-turbo=/tmp/sdt,sd15=/tmp/sd15 --taesd /tmp/taesd \
        --size 512 --batches 1,2,4 --reps 20 --ours ours.jsonl --json torch.json --table table.md

On the GPU: PyTorch fp16 (diffusers UNet2DConditionModel with its default SDPA attention processor and
AutoencoderTiny), CUDA-event timed, median of --reps runs after 3 warm-up runs, for the UNet forward at
each batch and TAESD encode / decode at batch 1; the fp16 and bf16 GEMM peak (torch.matmul 8192^3); the
FLOPs of one UNet forward (torch.utils.flop_counter on the meta device: 2*M*N*K per product, conv and
attention included). --ours: JSON lines of build/bench/bench_cpu --backend cuda (streamdiff's CUDA
backend) for the same parts; the table shows both, the speed ratio and each engine's TFLOP/s against
the measured GEMM peak. Needs diffusers (carried as a wheel to the GPU machine: bench/gpu.sh fetch-wheels);
without it only the GEMM peak is measured and the table has streamdiff's numbers alone.
"""
import argparse
import json
import os
import statistics
import sys


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cuda_time(fn, reps, warmup=3):
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts), min(ts)


def gemm_peak(reps):
    import torch
    out = {}
    n = 8192
    for name, dt in (('fp16', torch.float16), ('bf16', torch.bfloat16)):
        a = torch.randn(n, n, device='cuda', dtype=dt)
        b = torch.randn(n, n, device='cuda', dtype=dt)
        med, best = cuda_time(lambda: a @ b, reps)
        out[name] = 2 * n ** 3 / (best * 1e-3) / 1e12
    return out


def unet_flops(unet_dir, size, batch):
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    cfg = UNet2DConditionModel.load_config(unet_dir)
    with torch.device('meta'):
        m = UNet2DConditionModel.from_config(cfg).half()
        h = size // 8
        x = torch.randn(batch, m.config.in_channels, h, h, dtype=torch.float16)
        t = torch.full((batch,), 999, dtype=torch.long)
        ctx = torch.randn(batch, 77, m.config.cross_attention_dim, dtype=torch.float16)
        with FlopCounterMode(display=False) as fc:
            m(x, t, encoder_hidden_states=ctx)
    return fc.get_total_flops()


def bench_torch(a, rows):
    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    torch.backends.cuda.matmul.allow_tf32 = True
    h = a.size // 8
    for name, path in a.models:
        unet = UNet2DConditionModel.from_pretrained(os.path.join(path, 'unet'), torch_dtype=torch.float16).cuda().eval()
        for b in a.batches:
            x = torch.randn(b, unet.config.in_channels, h, h, device='cuda', dtype=torch.float16)
            t = torch.tensor([999 - 250 * i for i in range(b)], device='cuda')
            ctx = torch.randn(b, 77, unet.config.cross_attention_dim, device='cuda', dtype=torch.float16)
            with torch.inference_mode():
                med, best = cuda_time(lambda: unet(x, t, encoder_hidden_states=ctx), a.reps)
            rows.append({'engine': 'torch', 'part': 'unet', 'model': name, 'size': a.size, 'batch': b,
                         'ms_median': med, 'ms_min': best})
            log('torch unet %s batch %d: %.2f ms' % (name, b, med))
        del unet
        torch.cuda.empty_cache()
    if a.taesd:
        vae = AutoencoderTiny.from_pretrained(a.taesd, torch_dtype=torch.float16).cuda().eval()
        img = torch.rand(1, 3, a.size, a.size, device='cuda', dtype=torch.float16) * 2 - 1
        z = torch.randn(1, 4, h, h, device='cuda', dtype=torch.float16)
        with torch.inference_mode():
            for part, fn in (('taesd-encode', lambda: vae.encode(img)), ('taesd', lambda: vae.decode(z))):
                med, best = cuda_time(fn, a.reps)
                rows.append({'engine': 'torch', 'part': part, 'model': 'taesd', 'size': a.size, 'batch': 1,
                             'ms_median': med, 'ms_min': best})
                log('torch %s: %.2f ms' % (part, med))


def table(a, rows, peak, flops):
    ours = {}
    for r in rows:
        if r.get('engine') == 'streamdiff':
            ours[(r['part'], r.get('model', ''), r.get('batch', 1))] = r
    theirs = {(r['part'], r.get('model', ''), r.get('batch', 1)): r for r in rows if r.get('engine') == 'torch'}
    keys = sorted(set(ours) | set(theirs), key=lambda k: (k[0] != 'unet', k[1], k[0], k[2]))
    pk = peak.get('fp16')
    lines = ['| part | model | size | batch | streamdiff ms | PyTorch fp16 ms | speed-up | streamdiff TFLOP/s | '
             'PyTorch TFLOP/s |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for k in keys:
        o, t = ours.get(k), theirs.get(k)
        om = o['ms_median'] if o else None
        tm = t['ms_median'] if t else None
        f = flops.get(k[1], 0) * k[2] if k[0] == 'unet' else 0

        def tf(ms):
            if not f or not ms:
                return '-'
            v = f / (ms * 1e-3) / 1e12
            return '%.0f (%.0f%%)' % (v, 100 * v / pk) if pk else '%.0f' % v
        lines.append('| %s | %s | %d | %d | %s | %s | %s | %s | %s |' % (
            k[0], k[1], a.size, k[2], '%.2f' % om if om else '-', '%.2f' % tm if tm else '-',
            '%.2fx' % (tm / om) if om and tm else '-', tf(om), tf(tm)))
    head = ['GEMM peak (torch.matmul 8192^3, best of %d): fp16 %.0f TFLOP/s, bf16 %.0f TFLOP/s' %
            (a.reps, peak.get('fp16', 0), peak.get('bf16', 0))] if peak else []
    for m, f in flops.items():
        head.append('UNet %s at %dx%d: %.1f GFLOP per image (torch.utils.flop_counter)' % (m, a.size, a.size, f / 1e9))
    return '\n'.join(head + [''] + lines) + '\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', default='', help='name=dir,... diffusers folders')
    ap.add_argument('--taesd')
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--batches', default='1,2,4')
    ap.add_argument('--reps', type=int, default=20)
    ap.add_argument('--ours', help='JSON lines from bench_cpu --backend cuda')
    ap.add_argument('--json')
    ap.add_argument('--table')
    a = ap.parse_args()
    a.models = [tuple(s.split('=', 1)) for s in a.models.split(',') if s]
    a.batches = [int(b) for b in a.batches.split(',')]
    rows = []
    if a.ours and os.path.exists(a.ours):
        for line in open(a.ours):
            line = line.strip()
            if line.startswith('{'):
                r = json.loads(line)
                r.setdefault('model', 'taesd' if r.get('part', '').startswith('taesd') else '')
                rows.append(r)
    peak, flops = {}, {}
    try:
        import torch
        if torch.cuda.is_available():
            peak = gemm_peak(a.reps)
            log('GEMM peak: %s' % peak)
    except Exception as e:  # noqa: BLE001 - reported
        log('gpu_torch: no GEMM peak: %s' % e)
    try:
        import diffusers  # noqa: F401
        have_diffusers = True
    except Exception as e:  # noqa: BLE001 - reported
        log('gpu_torch: diffusers is not importable (%s): PyTorch columns skipped; carry it with '
            '`bash bench/gpu.sh fetch-wheels`' % e)
        have_diffusers = False
    if have_diffusers:
        for name, path in a.models:
            try:
                flops[name] = unet_flops(os.path.join(path, 'unet'), a.size, 1)
            except Exception as e:  # noqa: BLE001 - reported
                log('gpu_torch: FLOP count of %s failed: %s' % (name, e))
        try:
            bench_torch(a, rows)
        except Exception as e:  # noqa: BLE001 - reported
            log('gpu_torch: PyTorch benchmark failed: %s' % e)
    t = table(a, rows, peak, flops)
    print(t)
    if a.table:
        open(a.table, 'w').write(t)
    if a.json:
        json.dump({'rows': rows, 'gemm_peak_tflops': peak, 'unet_flops': flops}, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""streamdiffusion_ref.py - StreamDiffusion itself (PyPI `streamdiffusion`, PyTorch fp16, diffusers' SDPA
attention, TAESD) on the same model and settings as `streamdiff bench stream`, for the side-by-side
numbers of bench/gpu.sh (issue: >= 4x StreamDiffusion on the same GPU in the same run).

    python3 bench/streamdiffusion_ref.py --model /tmp/sd-random/sd-turbo --taesd /tmp/sd-random/taesd \
        --size 512 --frames 100 --warmup 10 --json sdref.json

Modes, each end to end per frame like streamdiff's synchronous bench (RGB bytes in, RGB bytes out, on the
host): img2img 1 step (t_index_list [35], cfg none: StreamDiffusion's sd-turbo setting), txt2img 1 step,
img2img 2 steps (t_index_list [32, 45], RCFG self, guidance 1.2). The frame goes through StreamDiffusion's
own __call__ (its image_processor.preprocess of a uint8 image tensor, TAESD encode, the stream batch
UNet call, TAESD decode), then to uint8 on the GPU and back to the host. Timed with wall clock after
torch.cuda.synchronize(), --warmup untimed frames first; prints a table and writes JSON.

Needs diffusers and streamdiffusion (carried as wheels: `bash bench/gpu.sh fetch-wheels`). StreamDiffusion
pins diffusers 0.24; this runs it with the diffusers that is installed (0.42.1 in the wheels), which keeps
the few APIs it uses. --device cpu --dtype float32 is a dry run of this script on a machine without a GPU
(torch.cuda.Event is stubbed; the numbers mean nothing).
"""
import argparse
import json
import statistics
import sys
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class _NoEvent:  # CPU dry run: StreamDiffusion.__call__ times itself with CUDA events
    def __init__(self, **_):
        pass

    def record(self):
        pass

    def elapsed_time(self, _):
        return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True, help='diffusers folder (e.g. bench_gen_arch output)')
    ap.add_argument('--taesd', required=True, help='AutoencoderTiny folder')
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--frames', type=int, default=100)
    ap.add_argument('--warmup', type=int, default=10)
    ap.add_argument('--modes', default='img2img-1,txt2img-1,img2img-2')
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--dtype', default='float16')
    ap.add_argument('--json')
    a = ap.parse_args()

    import torch
    from diffusers import AutoencoderTiny, StableDiffusionPipeline
    if a.device == 'cpu':
        torch.cuda.Event = _NoEvent
        torch.cuda.synchronize = lambda *x, **k: None
    from streamdiffusion import StreamDiffusion
    dtype = getattr(torch, a.dtype)
    dev = torch.device(a.device)

    def sync():
        if dev.type == 'cuda':
            torch.cuda.synchronize()

    pipe = StableDiffusionPipeline.from_pretrained(a.model, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False).to(dev)
    taesd = AutoencoderTiny.from_pretrained(a.taesd, torch_dtype=dtype).to(dev)
    g = torch.Generator().manual_seed(1)
    frames = [torch.randint(0, 256, (a.size, a.size, 3), dtype=torch.uint8, generator=g) for _ in range(2)]
    rows = []
    for mode in a.modes.split(','):
        kind, steps = mode.split('-')
        t_index = [35] if steps == '1' else [32, 45]
        cfg = 'none' if steps == '1' else 'self'
        stream = StreamDiffusion(pipe, t_index_list=t_index, torch_dtype=dtype, width=a.size, height=a.size,
                                 cfg_type=cfg)
        stream.vae = taesd
        stream.prepare('a photograph of a mountain lake at sunrise', num_inference_steps=50,
                       guidance_scale=1.2 if cfg == 'self' else 1.0, delta=1.0)
        lat = []
        with torch.inference_mode():
            for k in range(a.warmup + a.frames):
                sync()
                t0 = time.perf_counter()
                if kind == 'img2img':
                    x = frames[k % 2].to(dev, non_blocking=True).permute(2, 0, 1).unsqueeze(0)
                    x = x.to(dtype) / 255.0  # image_processor.preprocess maps [0, 1] to [-1, 1]
                    y = stream(x)
                else:
                    y = stream.txt2img()
                y = ((y.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)  # as postprocess, to bytes
                out = y[0].permute(1, 2, 0).contiguous().cpu()
                sync()
                if k >= a.warmup:
                    lat.append((time.perf_counter() - t0) * 1e3)
        assert out.shape == (a.size, a.size, 3)
        lat.sort()
        mean = statistics.mean(lat)
        row = {'engine': 'streamdiffusion', 'mode': mode, 't_index_list': t_index, 'cfg_type': cfg,
               'size': a.size, 'frames': len(lat), 'fps': 1000.0 / mean, 'latency_ms_mean': mean,
               'latency_ms_p50': lat[len(lat) // 2], 'latency_ms_p99': lat[min(len(lat) - 1, int(0.99 * len(lat)))]}
        rows.append(row)
        log('streamdiffusion %s: %.1f fps (%.2f ms mean, p99 %.2f)' % (mode, row['fps'], mean,
                                                                       row['latency_ms_p99']))
        del stream
    print('| mode | t_index_list | cfg | size | StreamDiffusion fps | latency ms mean / p50 / p99 |')
    print('|---|---|---|---:|---:|---|')
    for r in rows:
        print('| %s | %s | %s | %d | %.1f | %.2f / %.2f / %.2f |' % (
            r['mode'], r['t_index_list'], r['cfg_type'], r['size'], r['fps'], r['latency_ms_mean'],
            r['latency_ms_p50'], r['latency_ms_p99']))
    if a.json:
        info = {'torch': torch.__version__, 'device': torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}
        json.dump({'rows': rows, 'info': info}, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()

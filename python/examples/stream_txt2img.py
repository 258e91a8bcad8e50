#!/usr/bin/env python3
"""StreamDiffusion's README txt2img example, with streamdiff.

StreamDiffusion                                   streamdiff
-----------------------------------------------   ------------------------------------------------------
stream = StreamDiffusion(pipe, t_index_list=       stream = model.stream(t_index_list=[0, 16, 32, 45],
    [0, 16, 32, 45], torch_dtype=torch.float16,        width=512, height=512, cfg_type="none")
    cfg_type="none")
stream.prepare(prompt)                             stream.prepare(prompt)
x_output = stream.txt2img()                        x_output = stream.txt2img()        # a PIL.Image

    python3 python/examples/stream_txt2img.py --model stabilityai/sd-turbo --taesd madebyollin/taesd
"""

import argparse
import time
from pathlib import Path

import streamdiff

TINY = Path(__file__).resolve().parents[2] / "tests" / "data" / "models"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(TINY / "tiny-sd15"))
    ap.add_argument("--taesd", default=str(TINY / "taesd-tiny") if (TINY / "taesd-tiny").is_dir() else None)
    ap.add_argument("--prompt", default="1girl with brown dog hair, thick glasses, smiling")
    ap.add_argument("--size", type=int, default=None, help="frame size (default: 512, 64 for the tiny model)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--output", default="stream_txt2img_%02d.png")
    a = ap.parse_args()
    size = a.size or (64 if a.model.startswith(str(TINY)) else 512)

    model = streamdiff.Model(a.model, taesd=a.taesd, backend=a.backend)
    stream = model.stream(t_index_list=[0, 16, 32, 45], width=size, height=size, cfg_type="none")
    stream.prepare(a.prompt)

    # Warmup >= len(t_index_list) x frame_buffer_size
    for _ in range(4):
        stream()

    t0 = time.perf_counter()
    for k in range(a.frames):
        x_output = stream.txt2img()
        x_output.save(a.output % k)
    dt = (time.perf_counter() - t0) / max(1, a.frames)
    print(f"{a.frames} frames, {1 / dt:.1f} fps, written as {a.output % 0} ...")


if __name__ == "__main__":
    main()

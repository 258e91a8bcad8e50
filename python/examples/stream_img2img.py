#!/usr/bin/env python3
"""StreamDiffusion's README img2img example, with streamdiff (no torch, no diffusers).

StreamDiffusion                                   streamdiff
-----------------------------------------------   ------------------------------------------------------
pipe = StableDiffusionPipeline.from_pretrained(    model = streamdiff.Model("KBlueLeaf/kohaku-v2.1",
    "KBlueLeaf/kohaku-v2.1").to("cuda", fp16)          taesd="madebyollin/taesd", backend="cuda")
stream = StreamDiffusion(pipe, t_index_list=       stream = model.stream(t_index_list=[32, 45],
    [32, 45], torch_dtype=torch.float16)               width=512, height=512)
stream.load_lcm_lora(); stream.fuse_lora()         model.load_lora("lcm-lora-sdv1-5.safetensors")
stream.vae = AutoencoderTiny.from_pretrained(      (the taesd= argument above)
    "madebyollin/taesd")
stream.prepare(prompt)                             stream.prepare(prompt)
x_output = stream(init_image)                      x_output = stream(init_image)      # PIL in, PIL out
postprocess_image(x_output, output_type="pil")     (not needed: the output already is a PIL.Image)

Models are a diffusers folder, a .safetensors checkpoint or a Hugging Face id in the local cache (never
downloaded). Without arguments it runs on the tiny random-weight test model of this repository (the
images are noise, but every step runs).

    python3 python/examples/stream_img2img.py --model KBlueLeaf/kohaku-v2.1 --taesd madebyollin/taesd \\
        --lora lcm-lora-sdv1-5.safetensors --image assets/img2img_example.png --frames 10
"""

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

import streamdiff

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "data" / "models"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(TINY / "tiny-sd15"))
    ap.add_argument("--taesd", default=str(TINY / "taesd-tiny") if (TINY / "taesd-tiny").is_dir() else None)
    ap.add_argument("--lora", action="append", default=[], help="PATH[:SCALE], e.g. an LCM-LoRA (repeatable)")
    ap.add_argument("--image", help="input image (default: a synthetic gradient)")
    ap.add_argument("--prompt", default="1girl with dog hair, thick frame glasses")
    ap.add_argument("--size", type=int, default=None, help="frame size (default: 512, 64 for the tiny model)")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--output", default="stream_img2img.png")
    a = ap.parse_args()
    size = a.size or (64 if a.model.startswith(str(TINY)) else 512)

    model = streamdiff.Model(a.model, taesd=a.taesd, backend=a.backend)
    for spec in a.lora:  # e.g. the LCM-LoRA when the model is not LCM (StreamDiffusion: load_lcm_lora + fuse_lora)
        path, _, scale = spec.partition(":")
        model.load_lora(path, float(scale or 1.0))

    stream = model.stream(t_index_list=[32, 45], width=size, height=size, cfg_type="self")
    stream.prepare(a.prompt)

    if a.image:
        init_image = Image.open(a.image).convert("RGB").resize((size, size))
    else:
        g = np.linspace(0, 255, size, dtype=np.float32)
        init_image = Image.fromarray(np.stack(np.broadcast_arrays(g[None, :], g[:, None], 128 + 0 * g[None, :]),
                                              -1).astype(np.uint8))

    # Warmup >= len(t_index_list) x frame_buffer_size
    for _ in range(2):
        stream(init_image)

    t0 = time.perf_counter()
    for _ in range(a.frames):
        x_output = stream(init_image)  # a PIL.Image (a numpy HxWx3 uint8 frame gives a numpy frame)
    dt = (time.perf_counter() - t0) / max(1, a.frames)
    x_output.save(a.output)
    print(f"{a.frames} frames, {1 / dt:.1f} fps ({dt * 1e3:.0f} ms/frame), last output in {a.output}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""gen_canny_ref.py - reference edge maps for streamdiff's Canny preprocessor (tests/test_controlnet.c).

Writes tests/data/preprocess/: input.png (a synthetic 3-channel image: rectangles, a disc, a diagonal line, a
colour ramp, text-like strokes and seeded noise; made here with numpy, no external image) and
canny_<low>_<high>.png = cv2.Canny(rgb, low, high) (OpenCV's default aperture 3, L1 gradient), which is what
the ControlNet canny annotator runs on the RGB array. The C test requires its Canny to equal these bit for bit.

Requirements: pip install opencv-python-headless numpy (written with opencv 4.14.0, numpy 2.4). Developer-run.
Run from the repository root: python3 tools/gen_canny_ref.py
"""
import sys
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "preprocess"
PAIRS = [(100, 200), (50, 120), (0, 30), (300, 600)]


def synth(h=44, w=60, seed=1901):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 40 + 150 * xx / (w - 1)            # red ramp
    img[..., 2] = 30 + 60 * (yy / (h - 1)) ** 2      # blue curve
    img[6:20, 8:30] = (230, 220, 40)                 # a rectangle
    img[24:38, 36:52, 1] = 200                       # a green-only rectangle (another channel wins)
    disc = (yy - 30) ** 2 + (xx - 16) ** 2 <= 64     # a disc
    img[disc] = (20, 120, 240)
    for k in range(min(h, w) - 4):                  # a diagonal line
        img[2 + k, 40 + k // 3] = (255, 255, 255)
    img[40:42, 5:55:3] = 250                         # dashes
    img += rng.normal(0, 6, img.shape)               # noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rgb = synth()
    cv2.imwrite(str(OUT / "input.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    back = cv2.cvtColor(cv2.imread(str(OUT / "input.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, rgb)
    for lo, hi in PAIRS:
        e = cv2.Canny(rgb, lo, hi)
        cv2.imwrite(str(OUT / f"canny_{lo}_{hi}.png"), e)
        print(f"canny_{lo}_{hi}.png: {int((e > 0).sum())} edge pixels of {e.size}")
    print(f"opencv {cv2.__version__}, numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

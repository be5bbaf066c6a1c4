#!/usr/bin/env python3
"""VOC-sized photos for the benchmarks, from scikit-image's bundled data: `chelsea` (300×451)
and `coffee` (400×600), which at short side 336 become 336×505 / 336×504 (8 slide crops each).

    python3 bench/photos.py DIR [--png]

Writes DIR/<name>.ppm (binary P6, what `bench_infer` reads) and, with --png, DIR/<name>.png
(what `segsweep predict` reads).
"""
import sys

import numpy as np
import skimage.data as d

out, png = sys.argv[1], "--png" in sys.argv[2:]
for name in ("chelsea", "coffee"):
    im = np.ascontiguousarray(getattr(d, name)()[..., :3], dtype=np.uint8)
    h, w = im.shape[:2]
    with open(f"{out}/{name}.ppm", "wb") as f:
        f.write(f"P6\n{w} {h}\n255\n".encode() + im.tobytes())
    if png:
        from PIL import Image

        Image.fromarray(im).save(f"{out}/{name}.png")

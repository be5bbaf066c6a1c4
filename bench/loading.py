#!/usr/bin/env python3
"""A custom dataset of VOC-sized JPEG photos for bench/loading.sh (a benchmark, not a test).

    python3 bench/loading.py DIR N

Writes DIR/images/<id>.jpg (scikit-image's bundled photos, resized to 500×375 or 375×500,
quality 90, as VOC's JPEGs are), DIR/labels/<id>.png (palette-index labels in blocks of the
21 VOC classes, compressible like real annotations) and DIR/classes.txt (VOC's 21 classes).
The labels are made up: an mIoU on this set means nothing.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import skimage.data as d
from PIL import Image

out, n = Path(sys.argv[1]), int(sys.argv[2])
(out / "images").mkdir(parents=True, exist_ok=True)
(out / "labels").mkdir(parents=True, exist_ok=True)
shutil.copy(Path(__file__).parent.parent / "crates/data/classnames/voc21.txt", out / "classes.txt")
photos = [getattr(d, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")]
rng = np.random.default_rng(0)
for i in range(n):
    im = np.asarray(photos[i % len(photos)])[..., :3]
    size = (500, 375) if i % 3 else (375, 500)  # (w, h): every third one portrait
    Image.fromarray(im).resize(size).save(out / "images" / f"{i:04d}.jpg", quality=90)
    h, w = size[1], size[0]
    blocks = rng.integers(0, 21, (h // 25 + 1, w // 25 + 1), dtype=np.uint8)
    label = np.kron(blocks, np.ones((25, 25), dtype=np.uint8))[:h, :w]
    p = Image.fromarray(label, mode="P")
    p.putpalette([v for c in range(256) for v in (c, c, c)])
    p.save(out / "labels" / f"{i:04d}.png")

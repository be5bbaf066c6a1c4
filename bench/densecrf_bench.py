#!/usr/bin/env python3
"""Python side of bench/densecrf.sh: make inputs, time pydensecrf, compare with segsweep.

    densecrf_bench.py make DIR             # DIR/image.npy (375, 500, 3) u8, DIR/probs.npy (21, 375, 500) f32
    densecrf_bench.py run DIR PRESET ITERS REPEATS   # pydensecrf → DIR/q_py_PRESET.npy, prints median time
    densecrf_bench.py compare DIR PRESET   # max |ΔQ| and label agreement vs DIR/q_rs_PRESET.npy

The image is skimage's `chelsea` photo resized to 500×375 (w×h, a typical VOC size); the 21-label
probabilities are a softmax of smooth random logits (synthetic).
"""

import sys
import time
from pathlib import Path

import numpy as np

PRESETS = {
    "pydensecrf": (3.0, 3.0, 80.0, 13.0, 10.0),
    "deeplab": (1.0, 3.0, 67.0, 3.0, 4.0),
}
H, W, C = 375, 500, 21


def make(d):
    import cv2
    import skimage.data
    from scipy.ndimage import zoom

    img = cv2.resize(skimage.data.chelsea(), (W, H), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(0)
    coarse = rng.normal(0, 2.0, size=(C, H // 16 + 1, W // 16 + 1))
    logits = zoom(coarse, (1, 16, 16), order=1)[:, :H, :W] + rng.normal(0, 0.5, size=(C, H, W))
    e = np.exp(logits - logits.max(0, keepdims=True))
    probs = (e / e.sum(0, keepdims=True)).astype(np.float32)
    np.save(d / "image.npy", np.ascontiguousarray(img.astype(np.uint8)))
    np.save(d / "probs.npy", probs)


def run(d, preset, iters, repeats):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    img = np.load(d / "image.npy")
    probs = np.load(d / "probs.npy")
    gs, gc, bs, br, bc = PRESETS[preset]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        crf = dcrf.DenseCRF2D(W, H, C)
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
        crf.addPairwiseGaussian(sxy=gs, compat=gc)
        crf.addPairwiseBilateral(sxy=bs, srgb=br, rgbim=img, compat=bc)
        q = np.array(crf.inference(iters), dtype=np.float32).reshape(C, H, W)
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    print(f"pydensecrf: {H}x{W}, {C} labels, preset {preset}, {iters} iterations, 1 thread: "
          f"median {med:.3f} s over {repeats} runs")
    np.save(d / f"q_py_{preset}.npy", q)


def compare(d, preset):
    a = np.load(d / f"q_py_{preset}.npy")
    b = np.load(d / f"q_rs_{preset}.npy")
    agree = (a.argmax(0) == b.argmax(0)).mean()
    print(f"{preset}: max |Q_segsweep - Q_pydensecrf| = {np.abs(a - b).max():.2e}, "
          f"labels equal on {100 * agree:.4f}% of pixels")


if __name__ == "__main__":
    cmd, d = sys.argv[1], Path(sys.argv[2])
    if cmd == "make":
        make(d)
    elif cmd == "run":
        run(d, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "compare":
        compare(d, sys.argv[3])

#!/usr/bin/env python3
"""Parity goldens for the `densecrf` plugin, computed with pydensecrf.

Run by hand (never by CI):

    pip install cython && pip install pydensecrf2==1.1
    python3 tests/reference/densecrf_goldens.py

Writes tests/fixtures/densecrf/<case>_{image,probs,q_pydensecrf,q_deeplab}.npy:
  image (h, w, 3) uint8, probs (c, h, w) float32, q_* (c, h, w) float32 = pydensecrf's Q after
  the preset's iterations (pydensecrf: 5, deeplab: 10).

All inputs are synthetic (seeded): piecewise-constant colour regions with noise, and
probabilities that are a noisy softmax around a shifted/blurred copy of the regions, so that the
CRF changes a visible fraction of labels. Cases cover non-square sizes, 2 labels (pydensecrf's
scalar `seqCompute` path), 3, 5 and 21 labels (its SSE path).
"""

from pathlib import Path

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax
from scipy.ndimage import gaussian_filter

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "densecrf"

PRESETS = {
    # name: (gauss sxy, gauss compat, bilateral sxy, bilateral srgb, bilateral compat, iterations)
    "pydensecrf": (3.0, 3.0, 80.0, 13.0, 10.0, 5),
    "deeplab": (1.0, 3.0, 67.0, 3.0, 4.0, 10),
}

CASES = {
    # name: (h, w, labels, seed)
    "a37x53c3": (37, 53, 3, 1),
    "b60x45c5": (60, 45, 5, 2),
    "c16x23c21": (16, 23, 21, 3),
    "d29x40c2": (29, 40, 2, 4),
}


def regions(h, w, c, rng):
    """A label map of c Voronoi-like regions, and an image with one noisy colour per region."""
    centres = rng.uniform([0, 0], [h, w], size=(c + 2, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    d = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    labels = np.argmin(d, axis=0) % c
    palette = rng.integers(0, 256, size=(c, 3))
    img = palette[labels] + rng.normal(0, 12, size=(h, w, 3))
    return labels, np.clip(np.rint(img), 0, 255).astype(np.uint8)


def noisy_probs(labels, c, rng):
    """Softmax of a blurred, shifted one-hot of the labels plus noise: (c, h, w) float32."""
    onehot = (labels[None] == np.arange(c)[:, None, None]).astype(np.float64)
    shifted = np.roll(onehot, shift=(2, -3), axis=(1, 2))
    logits = 4.0 * np.stack([gaussian_filter(s, 2.0) for s in shifted])
    logits += rng.normal(0, 1.0, size=logits.shape)
    e = np.exp(logits - logits.max(0, keepdims=True))
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


def crf(img, probs, preset):
    gs, gc, bs, br, bc, n = PRESETS[preset]
    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=gs, compat=gc)
    d.addPairwiseBilateral(sxy=bs, srgb=br, rgbim=np.ascontiguousarray(img.copy()), compat=bc)
    return np.array(d.inference(n), dtype=np.float32).reshape(c, h, w)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, (h, w, c, seed) in CASES.items():
        rng = np.random.default_rng(seed)
        labels, img = regions(h, w, c, rng)
        probs = noisy_probs(labels, c, rng)
        files = {"image": img, "probs": probs}
        for preset in PRESETS:
            q = crf(img, probs, preset)
            changed = (q.argmax(0) != probs.argmax(0)).mean()
            print(f"{name} {preset}: labels changed by the CRF on {100 * changed:.1f}% of pixels")
            files[f"q_{preset}"] = q
        for key, arr in files.items():
            path = OUT / f"{name}_{key}.npy"
            np.save(path, arr)
            total += path.stat().st_size
    print(f"wrote {OUT} ({total / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Goldens for the `cliptrase` and `clip-rc` plugins (run by hand / `just fixtures`, never by CI).

Usage: python3 tests/reference/cliptrase_cliprc_reference.py [--only phase2a|paper]

Writes .safetensors files (f32 / i64 / u8) under tests/fixtures/cliptrase/ and
tests/fixtures/clip-rc/. Every computation is written from the formulas in
shared/research/methods.md §3 and the plugins' docs, in float32 like the Rust side, with the
upstream library calls where the reference uses them (sklearn DBSCAN, scipy median_filter,
torch bilinear interpolation).
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")


def save(path, tensors):
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(tensors, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


# ---------------------------------------------------------------- cliptrase, variant phase2a
def cliptrase_phase2a(f, temperature, strength):
    """f (B, E, h, w) -> (B, E, h, w); blend of normalised features (see plugin docs)."""
    b, e, h, w = f.shape
    x = f.reshape(b, e, h * w).transpose(1, 2)  # B, N, E
    xh = x / x.norm(dim=-1, keepdim=True)
    c = xh @ xh.transpose(1, 2) / temperature
    wgt = torch.softmax(c, dim=-1)
    r = wgt @ xh
    out = (1 - strength) * xh + strength * r
    return out.transpose(1, 2).reshape(b, e, h, w)


def make_cliptrase_phase2a():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 16, 5, 7, generator=g)
    # A few high-norm positions, as in real CLIP patch tokens, so raw vs normalised matters.
    feats[0, :, 1, 2] *= 20.0
    feats[1, :, 4, 6] *= 20.0
    out = {"feats": feats.numpy()}
    for name, t, s in [("default", 0.05, 0.5), ("t0p2_s0p8", 0.2, 0.8)]:
        out[f"out_{name}"] = cliptrase_phase2a(feats, t, s).numpy()
    save(os.path.join(FIX, "cliptrase", "phase2a.safetensors"), out)


# ---------------------------------------------------------------- clip-rc, variant phase2a
def axis_regions(length, count, overlap):
    s = length / (count - (count - 1) * overlap)
    step = s * (1.0 - overlap)
    out = []
    for k in range(count):
        lo = k * step
        hi = lo + s
        members = [i for i in range(length) if lo <= i + 0.5 < hi]
        if members:
            out.append((lo, hi, members))
    return out


def clip_rc_phase2a(f, num_regions, overlap, beta, rho, sigma):
    b, e, h, w = f.shape
    x = f.reshape(b, e, h * w).transpose(1, 2)  # B, N, E
    xh = x / x.norm(dim=-1, keepdim=True)
    rows = axis_regions(h, num_regions, overlap)
    cols = axis_regions(w, num_regions, overlap)
    means, centres = [], []
    for (ylo, yhi, ys) in rows:
        for (xlo, xhi, xs) in cols:
            idx = [y * w + xx for y in ys for xx in xs]
            means.append(xh[:, idx].mean(dim=1))  # B, E
            centres.append(((ylo + yhi) / 2, yhi - ylo, set(ys), (xlo + xhi) / 2, xhi - xlo, set(xs)))
    means = torch.stack(means, dim=1)  # B, K, E
    k = means.shape[1]
    a = np.zeros((h * w, k))
    for y in range(h):
        for xx in range(w):
            for j, (cy, sy, ys, cx, sx, xs) in enumerate(centres):
                if y in ys and xx in xs:
                    dy = (y + 0.5 - cy) / sy
                    dx = (xx + 0.5 - cx) / sx
                    a[y * w + xx, j] = np.exp(-(dy * dy + dx * dx) / (2 * sigma * sigma))
    a /= a.sum(axis=1, keepdims=True)
    reg = torch.from_numpy(a).float() @ means  # B, N, E
    g = xh.mean(dim=1, keepdim=True)
    mix = (1 - beta) * g + beta * reg
    out = rho * xh + (1 - rho) * mix
    return out.transpose(1, 2).reshape(b, e, h, w)


def make_clip_rc():
    g = torch.Generator().manual_seed(7)
    out = {}
    cases = {
        # name: (shape, num_regions, overlap, beta, rho, sigma)
        "default_14x14": ((2, 16, 14, 14), 4, 0.25, 0.6, 0.5, 0.5),
        "nonsquare_6x10": ((1, 16, 6, 10), 3, 0.4, 0.7, 0.3, 0.8),
        "no_overlap_9x5": ((1, 8, 9, 5), 2, 0.0, 1.0, 0.0, 0.5),
    }
    for name, (shape, n, o, beta, rho, sigma) in cases.items():
        feats = torch.randn(*shape, generator=g)
        out[f"{name}.feats"] = feats.numpy()
        out[f"{name}.out"] = clip_rc_phase2a(feats, n, o, beta, rho, sigma).numpy()
    save(os.path.join(FIX, "clip-rc", "phase2a.safetensors"), out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["phase2a", "paper"])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    os.makedirs(os.path.join(FIX, "cliptrase"), exist_ok=True)
    os.makedirs(os.path.join(FIX, "clip-rc"), exist_ok=True)
    if args.only in (None, "phase2a"):
        make_cliptrase_phase2a()
        make_clip_rc()

#!/usr/bin/env python3
"""Golden tensors for segsweep's `pamr` and `resclip` plugins.

A PyTorch restatement of PAMR (methods.md §0) and ResCLIP (methods.md §2), written from the
method description and a reading of the upstream code (yvhangyang/ResCLIP `clip/model.py`,
`resclip_segmentor.py`; sinahmr/NACLIP `pamr.py`); no upstream code is copied.

Run by hand (never by CI), from the repository root:

    python3 tests/reference/pamr_resclip_reference.py pamr      # tests/fixtures/pamr/*.safetensors
    python3 tests/reference/pamr_resclip_reference.py resclip   # tests/fixtures/resclip/*.safetensors
    python3 tests/reference/pamr_resclip_reference.py all

Everything is float32 on the CPU with fixed seeds. The end-to-end ResCLIP goldens need the tiny
random CLIP fixture `tests/fixtures/tiny-clip` (transformers `CLIPModel` layout).
"""

import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


def save(tensors, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    size = os.path.getsize(path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({size} bytes)")


# ----------------------------------------------------------------------------------------------
# PAMR (methods.md §0)
# ----------------------------------------------------------------------------------------------

# The 8 neighbours of a 3×3 window, row-major, centre excluded (unit offsets, scaled by the
# dilation). The centre sits between index 3 and 4 when the full window is needed.
NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
WINDOW = NEIGHBOURS[:4] + [(0, 0)] + NEIGHBOURS[4:]


def shift(x, dy, dx):
    """x[..., clamp(i + dy), clamp(j + dx)]: replicate padding expressed as clamped indices."""
    h, w = x.shape[-2:]
    iy = (torch.arange(h) + dy).clamp(0, h - 1)
    ix = (torch.arange(w) + dx).clamp(0, w - 1)
    return x[..., iy, :][..., ix]


def gather(x, dilations, offsets):
    """(..., H, W) → (..., P, H, W) with P = len(offsets)·len(dilations), dilation-major."""
    return torch.stack([shift(x, oy * d, ox * d) for d in dilations for (oy, ox) in offsets], dim=-3)


def pamr(image, mask, steps, dilations):
    """image (B, C, H, W), mask (B, K, H, W) at the same size → refined mask (B, K, H, W)."""
    std = gather(image, dilations, WINDOW).std(dim=-3, keepdim=True)  # unbiased, (B, C, 1, H, W)
    diff = (image.unsqueeze(-3) - gather(image, dilations, NEIGHBOURS)).abs()  # (B, C, P, H, W)
    aff = (-diff / (1e-8 + 0.1 * std)).mean(dim=1)  # mean over colour channels: (B, P, H, W)
    aff = aff.softmax(dim=1)
    for _ in range(steps):
        mask = (gather(mask, dilations, NEIGHBOURS) * aff.unsqueeze(1)).sum(dim=2)
    return mask


def blocky_image(g, h, w):
    """A (3, h, w) 0..255 image with a few flat colour regions and noise, so that PAMR's
    affinities are far from uniform."""
    img = torch.zeros(3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for _ in range(5):
        cy, cx = torch.randint(0, h, (1,), generator=g), torch.randint(0, w, (1,), generator=g)
        r = torch.randint(h // 6 + 1, h // 2 + 2, (1,), generator=g)
        colour = torch.randint(0, 256, (3, 1, 1), generator=g).float()
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        img = torch.where(inside, colour, img)
    img = img + torch.randn(3, h, w, generator=g) * 6.0
    return img.clamp(0, 255).round()


def make_pamr():
    g = torch.Generator().manual_seed(0)
    out = {}
    # Case 1: the plugin's defaults on a non-square image, K = 5 logit planes.
    h, w = 36, 56
    img = blocky_image(g, h, w)
    mask = torch.randn(4, h, w, generator=g) * 0.1
    out["a.image"] = img
    out["a.mask"] = mask
    out["a.out"] = pamr(img[None], mask[None], 10, [8, 16])[0]
    # Case 2: a batch of two images, other dilations and steps (probabilities in, probabilities out).
    h, w = 33, 20
    imgs = torch.stack([blocky_image(g, h, w), blocky_image(g, h, w)])
    probs = torch.randn(2, 3, h, w, generator=g).softmax(dim=1)
    out["b.image"] = imgs
    out["b.mask"] = probs
    out["b.out"] = pamr(imgs, probs, 3, [1, 3])
    # PAMR is invariant to a per-channel affine map of the image (up to its 1e-8): the Rust test
    # checks this on its own; here it is only printed.
    norm = (out["a.image"] / 255.0 - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]
    from_norm = pamr(norm[None], out["a.mask"][None], 10, [8, 16])[0]
    print("pamr: max |raw - normalised| =", (out["a.out"] - from_norm).abs().max().item())
    save(out, os.path.join(FIX, "pamr", "pamr_golden.safetensors"))


def main(argv):
    what = argv[1] if len(argv) > 1 else "all"
    if what in ("pamr", "all"):
        make_pamr()
    if what in ("resclip", "all"):
        make_resclip()  # noqa: F821  (defined below)


if __name__ == "__main__":
    main(sys.argv)

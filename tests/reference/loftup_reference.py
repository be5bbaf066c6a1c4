#!/usr/bin/env python3
"""LoftUp reference (PyTorch) for segsweep's candle port: random weights, real key names.

Builds the LoftUp upsampler (Huang et al., ICCV'25) as `shared/research/methods.md` §5 describes
it (upstream: andrehuang/loftup `upsamplers/{upsamplers,layers}.py`, `hubconf.py::loftup_clip`),
written from that description, with the module tree laid out so that `state_dict()` has exactly
the key names of the released `haiwen/loftup-clip/pytorch_model.bin`.

Writes to tests/fixtures/loftup/ (all arrays f32 .npy, (h, w) order):
  tiny_loftup.bin      torch.save(state_dict) of a tiny model (dim 16, 4 heads), the release format
  lr_feats.npy         (2, 16, 3, 4)   raw low-resolution features
  guidance.npy         (2, 3, 32, 44)  ImageNet-normalised guidance images
  image_u8.npy         (2, 32, 44, 3)  the same images as u8 RGB
  out_batch.npy        (2, 16, 32, 44) forward of the batch (min-max over the whole batch)
  out_single0.npy      (1, 16, 32, 44) forward of image 0 alone (what the plugin does per crop)

Coordinates: upstream takes the Fourier coordinates from torch.linspace(-1, 1, n) in f32, whose
last bit depends on the CPU's vector width (AVX2 vs AVX-512 vs CUDA). Multiplied by the highest
frequency exp(10) ≈ 22026, one ulp moves sin() by ~1e-3. The goldens therefore use the correctly
rounded value f32(-1 + 2 i / (n - 1)) (what the Rust port computes); the script prints how far
the torch.linspace version is from them (7.7e-5 of max |out| on the tiny fixture, AVX-512 CPU).

Run by hand (never by CI):  python3 tests/reference/loftup_reference.py
Full-size check (not committed): python3 tests/reference/loftup_reference.py --full /tmp/x.bin
writes a dim-512 random checkpoint (the size of the release) and prints its parameter count.
"""

import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "loftup")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# When True, coordinates are the correctly rounded f32 values (see module doc).
EXACT_COORDS = True


def coords(n):
    if EXACT_COORDS:
        if n == 1:
            return torch.tensor([-1.0], dtype=torch.float32)
        i = np.arange(n, dtype=np.float64)
        return torch.from_numpy((-1.0 + 2.0 * i / (n - 1)).astype(np.float32))
    return torch.linspace(-1, 1, n)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of (B, C, H, W), eps 1e-5; key `norm.{weight,bias}`."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelLayerNorm2d(nn.Module):
    """The final ConvNeXt-style channel LN: biased variance, eps 1e-6; keys `weight`, `bias`."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MinMaxScaler(nn.Module):
    """Each channel to [-0.5, 0.5] using min and max over batch × H × W (range clamped ≥ 1e-4)."""

    def forward(self, x):
        c = x.shape[1]
        flat = x.transpose(0, 1).reshape(c, -1)
        lo = flat.min(-1).values.view(1, c, 1, 1)
        rng = (flat.max(-1).values.view(1, c, 1, 1) - lo).clamp_min(1e-4)
        return (x - lo) / rng - 0.5


class Fourier(nn.Module):
    """sin/cos of (coords [+ image]) × exp(linspace(-2, 10, n)) + learned bias; key `biases`.

    The bias (2, dims, n) is reshaped *raw* to (n, dims), so channel k·dims + d of the sin block
    uses frequency k, input dim d, and bias element biases[0].flatten()[k·dims + d].
    """

    def __init__(self, with_image, n_freqs):
        super().__init__()
        self.with_image = with_image
        self.n = n_freqs
        self.dims = 5 if with_image else 2
        self.biases = nn.Parameter(torch.randn(2, self.dims, n_freqs))

    def forward(self, x):
        b, _, h, w = x.shape
        yy, xx = torch.meshgrid(coords(h), coords(w), indexing="ij")
        grid = torch.stack([yy, xx]).unsqueeze(0).expand(b, 2, h, w)
        inp = torch.cat([grid, x], 1) if self.with_image else grid
        f = torch.exp(torch.linspace(-2, 10, self.n)).view(1, self.n, 1, 1, 1)
        z = inp.unsqueeze(1) * f  # (b, n, dims, h, w)
        s = (z + self.biases[0].reshape(1, self.n, self.dims, 1, 1)).reshape(b, -1, h, w)
        c = (z + self.biases[1].reshape(1, self.n, self.dims, 1, 1)).reshape(b, -1, h, w)
        parts = [torch.sin(s), torch.cos(c)] + ([x] if self.with_image else [])
        return torch.cat(parts, 1)


class CrossAttention(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.norm_q = nn.LayerNorm(c)
        self.norm_kv = nn.LayerNorm(c)
        self.attention = nn.MultiheadAttention(c, heads)

    def forward(self, q, kv):
        q = self.norm_q(q).transpose(0, 1)
        kv = self.norm_kv(kv).transpose(0, 1)
        return self.attention(q, kv, kv, need_weights=False)[0].transpose(0, 1)


class FeedForward(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        # indices 0 LN, 1 Linear, 2 GELU (erf), 3 Dropout, 4 Linear, 5 Dropout
        self.net = nn.Sequential(
            nn.LayerNorm(c), nn.Linear(c, hidden), nn.GELU(), nn.Dropout(0.0),
            nn.Linear(hidden, c), nn.Dropout(0.0),
        )

    def forward(self, x):
        return self.net(x)


class CATransformer(nn.Module):
    def __init__(self, c, depth, heads, hidden):
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.ModuleList([CrossAttention(c, heads), FeedForward(c, hidden)]) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(c)

    def forward(self, q, kv):
        for attn, ff in self.layers:
            q = attn(q, kv) + q
            q = ff(q) + q
        return self.norm(q)


class LoftUp(nn.Module):
    def __init__(self, dim, heads=4, n_freqs=20, lr_freqs=5, depth=2):
        super().__init__()
        start = 5 * n_freqs * 2 + 3
        c = dim + 2 * lr_freqs * 2
        self.lr_pe = Fourier(False, lr_freqs)
        self.fourier_feat = nn.Sequential(MinMaxScaler(), Fourier(True, n_freqs))
        self.first_conv = nn.Sequential(
            ChannelNorm(start),
            nn.Conv2d(start, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        )
        self.ca_transformer = CATransformer(c, depth, heads, dim)
        self.final_conv = nn.Sequential(nn.Conv2d(c, dim, 1), ChannelLayerNorm2d(dim))

    def forward(self, lr, img):
        x = self.first_conv(self.fourier_feat(img))
        b, c, h, w = x.shape
        q = x.flatten(2).transpose(1, 2)
        kv = torch.cat([lr, self.lr_pe(lr)], 1).flatten(2).transpose(1, 2)
        y = self.ca_transformer(q, kv).transpose(1, 2).reshape(b, c, h, w)
        return self.final_conv(y)


class WithChannelNorm(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.upsampler = LoftUp(dim, heads)
        self.channelnorm = ChannelNorm(dim)

    def forward(self, lr, img):
        return self.upsampler(self.channelnorm(lr), img)


def randomise(model, g):
    """Non-trivial values for every tensor (LN/BN affine, BN running stats included)."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                p.fill_(7)
            elif name.endswith("running_var"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("running_mean"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight") or ".2.weight" in name or ".5.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("biases"):
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 10
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def expected_keys():
    """The released checkpoint's keys (methods.md §5), for the self-check below."""
    keys = ["channelnorm.norm.weight", "channelnorm.norm.bias",
            "upsampler.fourier_feat.1.biases", "upsampler.lr_pe.biases",
            "upsampler.first_conv.0.norm.weight", "upsampler.first_conv.0.norm.bias",
            "upsampler.ca_transformer.norm.weight", "upsampler.ca_transformer.norm.bias",
            "upsampler.final_conv.0.weight", "upsampler.final_conv.0.bias",
            "upsampler.final_conv.1.weight", "upsampler.final_conv.1.bias"]
    for i in (1, 4):
        keys += [f"upsampler.first_conv.{i}.weight", f"upsampler.first_conv.{i}.bias"]
    for i in (2, 5):
        keys += [f"upsampler.first_conv.{i}.{s}" for s in
                 ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    for l in (0, 1):
        p = f"upsampler.ca_transformer.layers.{l}"
        keys += [f"{p}.0.norm_q.weight", f"{p}.0.norm_q.bias", f"{p}.0.norm_kv.weight",
                 f"{p}.0.norm_kv.bias", f"{p}.0.attention.in_proj_weight",
                 f"{p}.0.attention.in_proj_bias", f"{p}.0.attention.out_proj.weight",
                 f"{p}.0.attention.out_proj.bias"]
        keys += [f"{p}.1.net.{i}.{s}" for i in (0, 1, 4) for s in ("weight", "bias")]
    return sorted(keys)


def build(dim, heads, seed):
    g = torch.Generator().manual_seed(seed)
    model = WithChannelNorm(dim, heads)
    randomise(model, g)
    model.eval()
    assert sorted(model.state_dict().keys()) == expected_keys(), "key names drifted"
    return model, g


def main():
    global EXACT_COORDS
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", help="write a full-size (dim 512) random checkpoint here instead")
    args = ap.parse_args()

    if args.full:
        model, _ = build(512, 4, seed=1)
        n = sum(v.numel() for k, v in model.state_dict().items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
        torch.save(model.state_dict(), args.full)
        print(f"wrote {args.full}: {n} parameters (BN running stats excluded), "
              f"{os.path.getsize(args.full) / 1e6:.1f} MB")
        return

    os.makedirs(OUT, exist_ok=True)
    dim, heads = 16, 4
    model, g = build(dim, heads, seed=0)
    torch.save(model.state_dict(), os.path.join(OUT, "tiny_loftup.bin"))

    b, h, w, lh, lw = 2, 32, 44, 3, 4
    # Smooth non-square images with an edge, as u8, so the plugin test can start from bytes.
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    imgs = []
    for i in range(b):
        r = 128 + 100 * np.sin(xx / (5.0 + i)) * (yy > h // 3 + i)
        gch = 60 + 3 * yy + 20 * i
        bl = 200 - 4 * xx + 30 * np.cos(yy / 4.0)
        imgs.append(np.stack([r, gch, bl], -1))
    image_u8 = np.clip(np.stack(imgs), 0, 255).astype(np.uint8)
    x = torch.from_numpy(image_u8).float().permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    guidance = (x - mean) / std
    lr = torch.randn(b, dim, lh, lw, generator=g) * 3.0 + 0.5

    with torch.no_grad():
        out_batch = model(lr, guidance)
        out_single0 = model(lr[:1], guidance[:1])
        EXACT_COORDS = False
        out_torch = model(lr, guidance)
        EXACT_COORDS = True

    def save(name, t):
        a = t.numpy() if isinstance(t, torch.Tensor) else t
        np.save(os.path.join(OUT, name), np.ascontiguousarray(a))

    save("lr_feats.npy", lr.float())
    save("guidance.npy", guidance.float())
    save("image_u8.npy", image_u8)
    save("out_batch.npy", out_batch)
    save("out_single0.npy", out_single0)
    d = (out_torch - out_batch).abs().max() / out_batch.abs().max()
    print(f"torch.linspace vs exact coordinates: max |diff| / max |out| = {d:.2e}")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT}: {total / 1e3:.0f} kB")


if __name__ == "__main__":
    main()

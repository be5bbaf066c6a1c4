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


# ---------------------------------------------------------------- cliptrase, variant paper
RATIO = 4  # cluster-map upsampling before the median filter (upstream `ratio`)


def blocky_crops(b, h, w):
    """Piecewise-constant colour blocks plus a small integer texture, exact in f32 (k/16 − 2);
    the Rust test evaluates the same integer formula (`tests/paper.rs::blocky_crops`)."""
    out = np.zeros((b, 3, h, w), dtype=np.float32)
    for bb in range(b):
        for c in range(3):
            for i in range(h):
                for j in range(w):
                    block = (i * 3 // h) * 3 + (j * 3 // w) + bb
                    colour = (block * 5 + c * 3) % 8
                    texture = (i * 7 + j * 13 + c * 5) % 5
                    out[bb, c, i, j] = (colour * 8 + texture) / 16.0 - 2.0
    return torch.from_numpy(out)


def trase_block(layer, x, heads):
    """Last block with softmax(qqᵀs)+softmax(kkᵀs)+softmax(vvᵀs), residual and FFN kept."""
    from make_tiny_clip import heads_merge, qkv_of
    q, k, v = qkv_of(layer, layer.layer_norm1(x), heads)
    s = q.shape[-1] ** -0.5
    a = sum(torch.softmax((t * s) @ t.transpose(-1, -2), -1) for t in (q, k, v))
    x = x + layer.self_attn.out_proj(heads_merge(a @ v))
    return x + layer.mlp(layer.layer_norm2(x))


def self_correlation(q, k, v):
    """Head mean of (cos qq + cos kk + cos vv)/3, with torch.cosine_similarity as attn2.py."""
    b, h, t, hd = q.shape
    out = []
    for bb in range(b):
        per_head = []
        for hh in range(h):
            cs = [torch.cosine_similarity(m[bb, hh].unsqueeze(1), m[bb, hh].unsqueeze(0), dim=-1)
                  for m in (q, k, v)]
            per_head.append((cs[0] + cs[1] + cs[2]) / 3.0)
        out.append(torch.stack(per_head).sum(0) / h)
    return torch.stack(out)


def remove_global(c):
    cp = c[:, 1:, 1:] - c[:, 0:1, 1:]
    cp[cp < 0] = 0
    return cp


def cluster_pipeline(cp, grid, crop, eps, min_samples):
    """sklearn DBSCAN on rows of C' (N, N) → labels; cluster maps → ×4 → median 7 → crop →
    argmax. Returns labels (N,), region (Hc, Wc) int64 (None if no cluster), maps after the
    median filter."""
    from scipy.ndimage import median_filter
    from sklearn.cluster import DBSCAN
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(cp.numpy())
    ks = [l for l in np.unique(labels) if l != -1]
    if not ks:
        return labels, None, None
    lt = torch.from_numpy(labels)
    maps = torch.stack([cp[lt == l].mean(dim=0) for l in ks]).reshape(len(ks), *grid)
    up = F.interpolate(maps[None], size=(RATIO * grid[0], RATIO * grid[1]), mode="bilinear",
                       align_corners=False)[0].numpy()
    med = np.stack([median_filter(m, size=2 * RATIO - 1) for m in up])
    full = F.interpolate(torch.from_numpy(med)[None], size=crop, mode="bilinear",
                         align_corners=False)[0]
    return labels, full.argmax(dim=0), med


def eps_margin(cp, eps):
    """Smallest |distance − eps| over all pairs, in f64: the Rust side may compute distances
    differently at the 1e-12 level, so a golden with a tiny margin would be fragile."""
    x = cp.double()
    d = torch.cdist(x, x)
    return (d - eps).abs().min().item()


def votes(f_hat, text, region, k, crop):
    """d2 region means (features and logits) and the per-window majority query."""
    e = f_hat.shape[0]
    up = F.interpolate(f_hat[None], size=crop, mode="bilinear", align_corners=False)[0]
    logits = F.interpolate((text @ f_hat.reshape(e, -1)).reshape(-1, *f_hat.shape[1:])[None],
                           size=crop, mode="bilinear", align_corners=False)[0]
    preds = logits.argmax(dim=0)
    feats, lg, winners = [], [], []
    for r in range(k):
        m = region == r
        feats.append(up[:, m].mean(dim=-1))
        lg.append(logits[:, m].mean(dim=-1))
        vals, counts = torch.unique(preds[m], return_counts=True)
        winners.append(int(vals[counts.argmax()]) if len(vals) else -1)
    return torch.stack(feats), torch.stack(lg), torch.tensor(winners, dtype=torch.int64)


def make_cliptrase_paper():
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_tiny_clip import head, vision_run
    from transformers import CLIPModel
    model = CLIPModel.from_pretrained(os.path.join(FIX, "tiny-clip"), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(11)
    text = torch.randn(5, model.config.projection_dim, generator=g)
    text = text / text.norm(dim=-1, keepdim=True)
    out = {"text": text.numpy()}
    # Crop a: the native 224² crop (14×14). Crop b: a non-square whole image 176×256 (11×16),
    # SCLIP pos interpolation. (eps, min_samples) chosen so that several clusters occur.
    for name, (h, w), candidates in [("a", (224, 224), [0.7, 0.5, 0.3, 0.9, 0.2]),
                                     ("b", (176, 256), [0.7, 0.5, 0.3, 0.9, 0.2])]:
        crops = blocky_crops(1, h, w)
        run = vision_run(model, crops)
        grid = run["grid"]
        q, k, v = run["qkv"][10]  # layer 11 (1-based)
        x12 = trase_block(run["last"], run["x"], run["heads"])
        f_hat = head(model, x12, grid)
        f_hat = f_hat / f_hat.norm(dim=1, keepdim=True)
        cp = remove_global(self_correlation(q, k, v))[0]
        chosen = None
        for eps in candidates:
            for ms in (3, 4, 5):
                labels, region, _ = cluster_pipeline(cp, grid, (h, w), eps, ms)
                nk = len([l for l in np.unique(labels) if l != -1])
                if nk >= 3 and eps_margin(cp, eps) > 1e-6:
                    chosen = (eps, ms, labels, region, nk)
                    break
            if chosen:
                break
        assert chosen, f"crop {name}: no eps gives ≥3 clusters"
        eps, ms, labels, region, nk = chosen
        noise = int((labels == -1).sum())
        print(f"crop {name}: grid {grid}, eps {eps}, min_samples {ms}: {nk} clusters, "
              f"{noise} noise patches, eps margin {eps_margin(cp, eps):.2e}")
        feats, lg, winners = votes(f_hat[0], text, region, nk, (h, w))
        out.update({
            f"{name}.dbscan": np.array([eps, ms], dtype=np.float64),
            f"{name}.block12": x12.numpy(),
            f"{name}.f_hat": f_hat.numpy(),
            f"{name}.c_prime": cp.numpy(),
            f"{name}.labels": labels.astype(np.int64),
            f"{name}.region": region.numpy().astype(np.uint8),
            f"{name}.region_feats": feats.numpy(),
            f"{name}.region_logits": lg.numpy(),
            f"{name}.winners": winners.numpy(),
        })
    save(os.path.join(FIX, "cliptrase", "paper.safetensors"), out)


def make_cliptrase_ops():
    """Plane ops and DBSCAN on synthetic data with a non-square grid."""
    from scipy.ndimage import median_filter
    from sklearn.cluster import DBSCAN
    g = torch.Generator().manual_seed(13)
    plane = torch.rand(6, 9, generator=g)
    up = F.interpolate(plane[None, None], size=(24, 36), mode="bilinear", align_corners=False)[0, 0]
    med = median_filter(up.numpy(), size=7)
    full = F.interpolate(torch.from_numpy(med)[None, None], size=(90, 140), mode="bilinear",
                         align_corners=False)[0, 0]
    # Blobs with border points and noise: three Gaussian clusters in 5-D plus uniform noise.
    centres = torch.tensor([[0.0] * 5, [3.0] * 5, [0.0, 3.0, 0.0, 3.0, 0.0]])
    pts = torch.cat([c + 0.45 * torch.randn(25, 5, generator=g) for c in centres]
                    + [6.0 * torch.rand(15, 5, generator=g) - 1.5])
    pts = pts[torch.randperm(pts.shape[0], generator=g)]
    out = {"plane": plane.numpy(), "up": up.numpy(), "med": med, "full": full.numpy(),
           "points": pts.numpy()}
    for eps, ms in [(1.0, 4), (1.3, 6), (0.8, 3)]:
        labels = DBSCAN(eps=eps, min_samples=ms).fit_predict(pts.numpy())
        nk = len(set(labels)) - (1 if -1 in labels else 0)
        print(f"dbscan eps {eps} min_samples {ms}: {nk} clusters, {(labels == -1).sum()} noise")
        out[f"labels_{eps}_{ms}"] = labels.astype(np.int64)
    save(os.path.join(FIX, "cliptrase", "ops.safetensors"), out)


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
    if args.only in (None, "paper"):
        make_cliptrase_ops()
        make_cliptrase_paper()

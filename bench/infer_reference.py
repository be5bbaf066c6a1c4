#!/usr/bin/env python3
"""PyTorch reference for `bench/infer_speed.sh`: SCLIP's dense inference timed on the same
random full-size CLIP, images and settings as segsweep's `bench_infer` example (not a test).

    python3 bench/infer_reference.py --model DIR --classes FILE [--rust-out DIR] [--reps N]
        [--device cpu|cuda] [--dtype f32|f16|bf16] IMAGE.ppm...

Timings: the 80-template text classifier as SCLIP builds it (per name one batch of 80 prompts
padded to 77 tokens), and images/s with SCLIP's VOC21 settings, one crop at a time (as SCLIP runs
it) and all crops of an image in one batch. The vision tower uses torch's fused
`scaled_dot_product_attention` for blocks 1..L-1 (what `nn.MultiheadAttention` runs in eval) and
SCLIP's CSA for the last block. With `--rust-out`, compares segsweep's `<stem>.probs.npy` and
`<stem>.labels.npy` with this script's (max relative error, share of equal labels).
On a GPU (`--device cuda`, used by `bench/gpu.sh`) the model runs in `--dtype`, the
post-processing (softmax over queries, synonym max, thresholds) in f32 on the GPU, and every
timed section ends with `torch.cuda.synchronize()`.
Prints one JSON object.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/reference"))
import make_tiny_clip as tiny  # noqa: E402
import sclip_reference as sclip  # noqa: E402

CFG = dict(short_side=336, crop=224, stride=112, logit_scale=65.0, prob_thd=0.1, area_thd=0.1)


def read_ppm(path):
    data = Path(path).read_bytes()
    parts = data.split(maxsplit=4)
    assert parts[0] == b"P6" and parts[3] == b"255", path
    w, h = int(parts[1]), int(parts[2])
    return np.frombuffer(parts[4][: h * w * 3], np.uint8).reshape(h, w, 3)


def prefix(model, x):
    """Blocks 1..L-1 with the fused attention kernel; returns the last block's input."""
    vm = model.vision_model
    emb = vm.embeddings
    cfg = model.config.vision_config
    heads = cfg.num_attention_heads
    p = emb.patch_embedding(x)
    b, d, gh, gw = p.shape
    t = torch.cat([emb.class_embedding.expand(b, 1, d), p.flatten(2).transpose(1, 2)], 1)
    t = vm.pre_layrnorm(t + tiny.interp_pos(emb.position_embedding.weight, (gh, gw), cfg.image_size // cfg.patch_size))
    for layer in vm.encoder.layers[:-1]:
        q, k, v = tiny.qkv_of(layer, layer.layer_norm1(t), heads)
        t = t + layer.self_attn.out_proj(tiny.heads_merge(F.scaled_dot_product_attention(q, k, v)))
        t = t + layer.mlp(layer.layer_norm2(t))
    return t, (gh, gw), heads


def crop_logits(model, crops, text):
    """(B, 3, 224, 224) → cosine logits (B, Q, 14, 14) with SCLIP's CSA last block."""
    t, grid, heads = prefix(model, crops)
    out = tiny.strategy("sclip", model.vision_model.encoder.layers[-1], t, heads, grid)
    f = tiny.head(model, out, grid)
    f = f / f.norm(dim=1, keepdim=True)
    return torch.einsum("behw,qe->bqhw", f, text)


def postprocess(logits, qclass_t, n_cls):
    """SCLIP's `postprocess_result` (sclip_reference.postprocess without its logging), on the
    logits' device: logits (Q, h, w) → probs (C, h, w), labels (h, w)."""
    seg = (logits.float() * CFG["logit_scale"]).softmax(0)
    cls_index = F.one_hot(qclass_t).T.view(n_cls, len(qclass_t), 1, 1)
    probs = (seg.unsqueeze(0) * cls_index).max(1)[0]
    seg = probs.clone()
    pred = F.one_hot(seg.argmax(0), n_cls).to(seg.dtype)
    area = pred[:, :, 1:].sum((0, 1), keepdim=True)
    area = (area > CFG["area_thd"] * area.sum()).to(seg.dtype)
    seg[1:] *= area.transpose(0, -1)
    labels = seg.argmax(0)
    labels[seg.max(0)[0] < CFG["prob_thd"]] = 0
    return probs, labels


def segment(model, img, text, qclass_t, n_cls, batched):
    h, w = img.shape[:2]
    resized = sclip.imrescale(img, CFG["short_side"])
    x = torch.from_numpy(resized).float().permute(2, 0, 1)[None]
    x = (x - sclip.MEAN[:, None, None]) / sclip.STD[:, None, None]
    x = x.to(device=text.device, dtype=text.dtype)
    H, W = x.shape[-2:]
    wins = sclip.windows(H, W, CFG["crop"], CFG["stride"])
    crops = [x[:, :, y1:y2, x1:x2] for (y1, x1, y2, x2) in wins]
    if batched:
        logits = crop_logits(model, torch.cat(crops, 0), text)
    else:
        logits = torch.cat([crop_logits(model, c, text) for c in crops], 0)
    preds = x.new_zeros((1, text.shape[0], H, W))
    count = x.new_zeros((1, 1, H, W))
    for (y1, x1, y2, x2), lg in zip(wins, logits):
        up = F.interpolate(lg[None], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
        preds += F.pad(up, (x1, W - x2, y1, H - y2))
        count[:, :, y1:y2, x1:x2] += 1
    dense = F.interpolate(preds / count, size=(h, w), mode="bilinear", align_corners=False)
    return postprocess(dense[0], qclass_t, n_cls)


def text_classifier(model, queries):
    """SCLIP: per name, one batch of the 80 templates at the full 77-token context."""
    tokenize = tiny.load_open_clip_tokenizer()
    templates = sclip.load_templates()
    rows = []
    for q in queries:
        ids = tokenize([t(q) for t in templates]).long().to(model.device)
        f = model.get_text_features(input_ids=ids)
        f = getattr(f, "pooler_output", f)
        f = f / f.norm(dim=-1, keepdim=True)
        f = f.mean(0)
        rows.append(f / f.norm())
    return torch.stack(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--classes", required=True)
    ap.add_argument("--rust-out")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    dtype = dict(f32=torch.float32, f16=torch.float16, bf16=torch.bfloat16)[a.dtype]
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = CLIPModel.from_pretrained(a.model, dtype=dtype).eval().to(dev)
    queries, qclass = sclip.parse_classes(Path(a.classes))
    n_cls = max(qclass) + 1
    qclass_t = torch.tensor(qclass, device=dev)
    images = [read_ppm(p) for p in a.images]
    res = dict(threads=torch.get_num_threads(), images=len(images), queries=len(queries),
               device=a.device, dtype=a.dtype)
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(dev)
        res["torch"] = torch.__version__
    with torch.inference_mode():
        t = time.perf_counter()
        text = text_classifier(model, queries)
        sync()
        res["text_cold_s"] = time.perf_counter() - t
        text = text.to(dtype)
        for _ in range(3 if dev.type == "cuda" else 1):  # warm-up (cuDNN/cuBLAS heuristics)
            segment(model, images[0], text, qclass_t, n_cls, True)
            segment(model, images[0], text, qclass_t, n_cls, False)
        sync()
        for batched in (False, True):
            best = float("inf")
            for _ in range(a.reps):
                t = time.perf_counter()
                outs = [segment(model, im, text, qclass_t, n_cls, batched) for im in images]
                sync()
                best = min(best, time.perf_counter() - t)
            res["s_per_image_" + ("batched" if batched else "bs1")] = best / len(images)
        if a.rust_out:
            errs, agree, total = [], 0, 0
            for p, (probs, labels) in zip(a.images, outs):
                stem = Path(p).stem
                rp = np.load(Path(a.rust_out) / f"{stem}.probs.npy")
                rl = np.load(Path(a.rust_out) / f"{stem}.labels.npy")
                tp = probs.float().cpu().numpy()
                errs.append(float(np.abs(rp - tp).max() / np.abs(tp).max()))
                agree += int((rl == labels.cpu().numpy()).sum())
                total += rl.size
            res["parity_probs_max_rel_err"] = max(errs)
            res["parity_label_agreement"] = agree / total
    print(json.dumps(res))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""SCLIP's dense inference in PyTorch on segsweep's tiny random CLIP: goldens for segsweep-infer.

Run by hand (never by CI), after `make_tiny_clip.py` has written `tests/fixtures/tiny-clip/`:

    python3 tests/reference/sclip_reference.py          # writes tests/fixtures/sclip/

Written from `shared/research/methods.md` §0–§1 (SCLIP `clip_segmentor.py` `forward_feature`,
`forward_slide`, `postprocess_result`; mmcv `imrescale`): cv2 INTER_LINEAR resize of the uint8
image to short side S (long side capped at 2048), normalisation on the 0..255 scale, 224/112
sliding windows with the last window clamped, per-crop CSA features after ln_post + proj,
L2-normalised, cosine logits bilinearly upsampled to the crop, summed and divided by the overlap
count, resized to the original size, softmax(logit_scale · logits) over all queries, max over each
class's synonyms, area_thd, argmax, prob_thd → 0. Whole mode upsamples the grid logits straight to
the original size. The vision tower, CSA block and text tower are `make_tiny_clip.py`'s (asserted
there against transformers' own forward).

Needs torch, transformers, opencv-python, numpy, safetensors and the `open_clip_torch` wheel (for
the tokenizer and the 80 OpenAI ImageNet templates).
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_clip as tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/sclip"
CLASSES = OUT / "classes.txt"

# CLIP's mean/std on the 0..1 scale, times 255 in f32 (segsweep computes it the same way; SCLIP's
# config rounds them to 3 decimals, a 1e-6 relative difference).
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073], dtype=torch.float32) * 255
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711], dtype=torch.float32) * 255

# Canvas and resized images are stored subsampled (rows, cols) to keep the fixture small.
CANVAS_STEP = (8, 6)
RESIZED_ROW_STEP = 4

# `text`: "templates" is SCLIP's 80-template classifier of classes.txt. On random weights its rows
# are nearly parallel (cosines 0.9-1.0), so one class wins almost everywhere; "random" is a seeded
# random unit-row classifier of the same shape, which gives labels that vary and thresholds that
# bite.
CASES = [
    dict(name="slide_a", image="a", text="templates", mode="slide", short_side=224, logit_scale=40.0,
         prob_thd=0.0, area_thd=None),
    dict(name="slide_b", image="b", text="random", mode="slide", short_side=224, logit_scale=65.0,
         prob_thd=0.45, area_thd=0.25),
    dict(name="whole_a", image="a", text="random", mode="whole", short_side=224, logit_scale=50.0,
         prob_thd=0.3, area_thd=None),
]


def synthetic_image(h, w, seed):
    """A non-square u8 RGB image with smooth regions, edges and texture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(0.11 * x + 0.05 * y + seed)
    g = np.where((x // 17 + y // 13 + seed) % 2 == 0, 200.0, 40.0)
    b = (37 * x + 11 * y * (seed + 1)) % 256
    img = np.stack([r, g, b], -1) + np.random.default_rng(seed).normal(0, 12, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


IMAGES = {"a": synthetic_image(60, 92, 0), "b": synthetic_image(75, 50, 1)}


def rescale_size(h, w, short, long_cap=2048):
    """mmcv `rescale_size((w, h), (long_cap, short))` → (h', w')."""
    f = min(max(short, long_cap) / max(h, w), min(short, long_cap) / min(h, w))
    return int(h * float(f) + 0.5), int(w * float(f) + 0.5)


def imrescale(img, short, long_cap=2048):
    h, w = rescale_size(img.shape[0], img.shape[1], short, long_cap)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def parse_classes(path):
    """SCLIP `get_cls_idx`: one class per line, synonyms split on ', '."""
    queries, qclass = [], []
    for i, line in enumerate(path.read_text().splitlines(keepends=True)):
        for name in line.split(", "):
            queries.append(name.replace("\n", ""))
            qclass.append(i)
    return queries, qclass


def load_templates():
    path = Path(tiny.__file__).resolve()  # for the error message only
    import site
    for sp in sys.path + site.getsitepackages() + [site.getusersitepackages()]:
        p = Path(sp or ".") / "open_clip" / "zero_shot_metadata.py"
        if p.exists():
            ns = {}
            exec(compile(p.read_text(), str(p), "exec"), ns)
            t = ns["OPENAI_IMAGENET_TEMPLATES"]
            assert len(t) == 80 and t[0]("x") == "a bad photo of a x." and t[-1]("x") == "a tattoo of the x."
            return t
    sys.exit(f"open_clip_torch is not installed (see {path.name}'s docstring)")


def classifier(model, queries):
    """SCLIP: per query, encode the 80 templates, normalise each, average, normalise again."""
    tokenize = tiny.load_open_clip_tokenizer()
    rows = []
    for q in queries:
        ids = tokenize([t(q) for t in load_templates()]).long()
        f = tiny.text_features(model, ids)
        f = f / f.norm(dim=-1, keepdim=True)
        f = f.mean(0)
        rows.append(f / f.norm())
    return torch.stack(rows)


def forward_feature(model, crop, text, size):
    """Cosine logits of one crop (1, 3, h, w), bilinearly resized to `size`; also the grid logits."""
    run = tiny.vision_run(model, crop)
    out = tiny.strategy("sclip", run["last"], run["x"], run["heads"], run["grid"])
    feats = tiny.head(model, out, run["grid"])  # (1, E, gh, gw)
    feats = feats / feats.norm(dim=1, keepdim=True)
    grid_logits = torch.einsum("behw,qe->bqhw", feats, text)
    return F.interpolate(grid_logits, size=size, mode="bilinear", align_corners=False), grid_logits


def windows(h, w, crop=224, stride=112):
    out = []
    for hi in range(max(h - crop + stride - 1, 0) // stride + 1):
        for wi in range(max(w - crop + stride - 1, 0) // stride + 1):
            y1, x1 = hi * stride, wi * stride
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            out.append((max(y2 - crop, 0), max(x2 - crop, 0), y2, x2))
    return out


def postprocess(logits, qclass, n_cls, case):
    """SCLIP `postprocess_result` for one image: logits (Q, h, w) → probs (C, h, w), labels."""
    seg = (logits * case["logit_scale"]).softmax(0)
    cls_index = F.one_hot(torch.tensor(qclass)).T.view(n_cls, len(qclass), 1, 1)
    probs = (seg.unsqueeze(0) * cls_index).max(1)[0]
    seg = probs.clone()
    if case["area_thd"] is not None:
        pred = F.one_hot(seg.argmax(0), n_cls).to(seg.dtype)
        area = pred[:, :, 1:].sum((0, 1), keepdim=True)
        area = (area > case["area_thd"] * area.sum()).to(seg.dtype)
        seg[1:] *= area.transpose(0, -1)
        print(f"  area_thd keeps foreground classes {area.flatten().tolist()}", file=sys.stderr)
    labels = seg.argmax(0)
    labels[seg.max(0)[0] < case["prob_thd"]] = 0
    return probs, labels


def run_case(model, texts, qclass, n_cls, case, g):
    text = texts[case["text"]]
    img = IMAGES[case["image"]]
    h, w = img.shape[:2]
    resized = imrescale(img, case["short_side"])
    x = torch.from_numpy(resized).float().permute(2, 0, 1)[None]
    x = (x - MEAN[:, None, None]) / STD[:, None, None]
    H, W = x.shape[-2:]
    n = case["name"]
    if case["mode"] == "slide":
        preds = x.new_zeros((1, text.shape[0], H, W))
        count = x.new_zeros((1, 1, H, W))
        crop_logits = []
        for (y1, x1, y2, x2) in windows(H, W):
            up, grid = forward_feature(model, x[:, :, y1:y2, x1:x2], text, (y2 - y1, x2 - x1))
            crop_logits.append(grid)
            preds += F.pad(up, (x1, W - x2, y1, H - y2))
            count[:, :, y1:y2, x1:x2] += 1
        canvas = preds / count
        logits = F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False)
        g[f"{n}.crop_logits"] = torch.cat(crop_logits, 0)
        g[f"{n}.canvas_sub"] = canvas[0, :, :: CANVAS_STEP[0], :: CANVAS_STEP[1]]
    else:
        logits, grid = forward_feature(model, x, text, (h, w))
        g[f"{n}.crop_logits"] = grid
    probs, labels = postprocess(logits[0], qclass, n_cls, case)
    g[f"{n}.probs"] = probs
    g[f"{n}.labels"] = labels.to(torch.uint8)
    fg = (labels != 0).float().mean().item()
    print(f"{n}: resized {tuple(resized.shape)}, labels {torch.bincount(labels.flatten(), minlength=n_cls).tolist()}, "
          f"non-background {fg:.2f}")
    assert 0.05 < fg < 0.98 or case["prob_thd"] == 0, "thresholds make the labels trivial; retune the case"
    return resized


def resize_goldens(g, meta):
    """Small full-size resize goldens: upscale, downscale, exact 2×, long-side cap."""
    rng = np.random.default_rng(7)
    cases = [((23, 37), 50, 2048), ((61, 47), 20, 2048), ((40, 62), 20, 2048), ((10, 90), 50, 200)]
    meta["resize"] = []
    for i, ((h, w), short, cap) in enumerate(cases):
        src = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        dst = imrescale(src, short, cap)
        g[f"resize.{i}.src"] = torch.from_numpy(src)
        g[f"resize.{i}.dst"] = torch.from_numpy(dst)
        meta["resize"].append(dict(short_side=short, long_cap=cap, src=[h, w], dst=list(dst.shape[:2])))


def main():
    model = CLIPModel.from_pretrained(str(tiny.FIX_MODEL), dtype=torch.float32).eval()
    queries, qclass = parse_classes(CLASSES)
    n_cls = max(qclass) + 1
    g, meta = {}, dict(made_by="tests/reference/sclip_reference.py", torch=torch.__version__, cv2=cv2.__version__,
                      queries=queries, query_class=qclass, canvas_step=CANVAS_STEP,
                      resized_row_step=RESIZED_ROW_STEP, cases=CASES)
    with torch.no_grad():
        text = classifier(model, queries)
        rand = torch.randn(text.shape, generator=torch.Generator().manual_seed(3))
        texts = {"templates": text, "random": rand / rand.norm(dim=-1, keepdim=True)}
        g["text.templates"], g["text.random"] = texts["templates"], texts["random"]
        for k, img in IMAGES.items():
            g[f"image.{k}"] = torch.from_numpy(img)
        for case in CASES:
            resized = run_case(model, texts, qclass, n_cls, case, g)
            if case["mode"] == "slide":  # whole_a resizes image a exactly as slide_a does
                g[f"{case['name']}.resized_sub"] = torch.from_numpy(resized[::RESIZED_ROW_STEP].copy())
    resize_goldens(g, meta)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() if v.dtype in (torch.uint8, torch.int64) else v.float().contiguous()
               for k, v in g.items()}, str(OUT / "goldens.safetensors"))
    (OUT / "goldens.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    for k, v in g.items():
        print(f"{k:22s} {tuple(v.shape)} {v.dtype}")
    print(f"fixture size {total / 1e6:.3f} MB")


if __name__ == "__main__":
    main()

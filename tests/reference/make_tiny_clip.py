#!/usr/bin/env python3
"""Build segsweep's tiny random CLIP fixture and the goldens the Rust CLIP tests compare against.

Run by hand (never by CI):

    python3 tests/reference/make_tiny_clip.py            # tests/fixtures/{tiny-clip,clip}/
    python3 tests/reference/make_tiny_clip.py --full /tmp/clip-b16-random
                                                         # seeded random full ViT-B/16 (not committed)
    python3 tests/reference/make_tiny_clip.py --speed /tmp/clip-b16-random
                                                         # PyTorch timing (vs the clip_speed example)

Needs torch + transformers (PyPI) and, for the token goldens, the `open_clip_torch` wheel (its
`tokenizer.py` is loaded directly, so torchvision is not needed) plus `ftfy`:
    pip install --no-deps open_clip_torch==3.3.0 ftfy wcwidth

What it computes is written from segsweep's `shared/research/methods.md` §0–§1 (SCLIP's CSA,
NACLIP's Gaussian prior, MaskCLIP's value path, SCLIP's pos-embed interpolation rule); the model
modules are transformers' `CLIPModel`, and the manual block below is asserted equal to transformers'
own forward before any golden is written.

The fixture weights are stored in f16 (to keep the repo small) and every golden is computed after
re-loading them in f32, exactly as the Rust side does.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

ROOT = Path(__file__).resolve().parents[2]
FIX_MODEL = ROOT / "tests/fixtures/tiny-clip"
FIX_GOLD = ROOT / "tests/fixtures/clip"

TINY = dict(
    vision_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=12, num_attention_heads=2,
        patch_size=16, image_size=224, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        num_channels=3,
    ),
    text_config=dict(
        hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    ),
    projection_dim=16,
)

# openai/clip-vit-base-patch16's config.json values.
FULL_B16 = dict(
    vision_config=dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        patch_size=16, image_size=224, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        num_channels=3,
    ),
    text_config=dict(
        hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
        vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
        layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    ),
    projection_dim=512,
)

PROMPTS = [
    "a photo of a person.",
    "a bad photo of a television monitor.",
    "sky",
    "a tattoo of the wood .",
    "a photo of the small person in jeans.",
    "itap of a cat.",
]

SIGMA = 5.0
LONG_GRID = (21, 31)  # (gh, gw) for the standalone pos-embed golden


def init_weights(model: CLIPModel, seed: int) -> None:
    """Seeded init with fan-in scaled weights. HF's default std (0.02) leaves a 32-wide random
    ViT with near-uniform attention and near-identical tokens, which would make the goldens a
    weak test; unit-variance activations keep every op in a non-degenerate regime."""
    g = torch.Generator().manual_seed(seed)

    def normal_(t, std, mean=0.0):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for name, p in sorted(model.named_parameters()):
        if name == "logit_scale":
            continue
        if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
            normal_(p, 0.1, 1.0 if name.endswith("weight") else 0.0)
        elif name.endswith(".bias"):
            normal_(p, 0.05)
        elif "patch_embedding" in name:
            normal_(p, 1.0 / math.sqrt(p.shape[1] * p.shape[2] * p.shape[3]))
        elif "class_embedding" in name:
            normal_(p, 1.0)
        elif "position_embedding" in name:
            normal_(p, 0.5)
        elif "token_embedding" in name:
            normal_(p, 1.0)
        elif p.dim() == 2:
            gain = 1.5 if ("q_proj" in name or "k_proj" in name) else 1.0
            normal_(p, gain / math.sqrt(p.shape[1]))
        else:
            raise RuntimeError(f"no init rule for {name} {tuple(p.shape)}")


def build(cfg: dict, out: Path, dtype: torch.dtype, kind: str, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(**cfg)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    init_weights(model, seed)
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()
          if not k.endswith("position_ids")}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(str(out / "config.json"), use_diff=False)
    (out / "segsweep-fixture.json").write_text(json.dumps({"weights": kind, "seed": seed}) + "\n")


# ----------------------------------------------------------------------------------------------
# Reference computations (on top of transformers' modules)
# ----------------------------------------------------------------------------------------------

def synthetic_crops(b: int, h: int, w: int) -> torch.Tensor:
    """Deterministic normalised-looking input (B, 3, h, w); the Rust tests evaluate the same
    formula in f64 and cast to f32 (`parity.rs::synthetic_crops`)."""
    bb, cc, ii, jj = np.meshgrid(np.arange(b), np.arange(3), np.arange(h), np.arange(w), indexing="ij")
    smooth = 1.5 * np.sin(0.13 * ii + 0.07 * jj * (cc + 1) + 0.9 * bb)
    texture = ((ii * 7 + jj * 13 + cc * 5 + bb * 11) % 23) / 11.0 - 1.0
    return torch.from_numpy((smooth + texture).astype(np.float32))


def interp_pos(pos: torch.Tensor, grid: tuple, base: int) -> torch.Tensor:
    """SCLIP's rule (methods.md §0): bicubic with scale_factor ((gh+0.1)/base, (gw+0.1)/base)."""
    gh, gw = grid
    if (gh, gw) == (base, base):
        return pos
    d = pos.shape[-1]
    patch = pos[1:].reshape(1, base, base, d).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((gh + 0.1) / base, (gw + 0.1) / base),
                          mode="bicubic", align_corners=False)
    assert patch.shape[-2:] == (gh, gw), patch.shape
    return torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(gh * gw, d)], 0)


def heads_split(x, heads):
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def heads_merge(x):
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


def qkv_of(layer, x_ln, heads):
    a = layer.self_attn
    return (heads_split(a.q_proj(x_ln), heads), heads_split(a.k_proj(x_ln), heads),
            heads_split(a.v_proj(x_ln), heads))


def vanilla_block(layer, x, heads):
    q, k, v = qkv_of(layer, layer.layer_norm1(x), heads)
    p = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
    x = x + layer.self_attn.out_proj(heads_merge(p @ v))
    return x + layer.mlp(layer.layer_norm2(x)), p, (q, k, v)


def gaussian_prior(grid, sigma):
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64),
                            torch.arange(gw, dtype=torch.float64), indexing="ij")
    c = torch.stack([ys.flatten(), xs.flatten()], 1)
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    om = torch.zeros(gh * gw + 1, gh * gw + 1, dtype=torch.float64)
    om[1:, 1:] = torch.exp(-d2 / (2 * sigma ** 2))
    return om.float()


def strategy(name, layer, x, heads, grid):
    s = (x.shape[-1] // heads) ** -0.5
    x_ln = layer.layer_norm1(x)
    q, k, v = qkv_of(layer, x_ln, heads)
    if name == "vanilla":
        return vanilla_block(layer, x, heads)[0]
    if name == "sclip":  # CSA, residual and FFN kept
        a = torch.softmax(q @ q.transpose(-1, -2) * s, -1) + torch.softmax(k @ k.transpose(-1, -2) * s, -1)
        x = x + layer.self_attn.out_proj(heads_merge(a @ v))
        return x + layer.mlp(layer.layer_norm2(x))
    if name == "naclip":  # kk + Gaussian prior, no residual, no FFN
        a = torch.softmax(k @ k.transpose(-1, -2) * s + gaussian_prior(grid, SIGMA), -1)
        return layer.self_attn.out_proj(heads_merge(a @ v))
    if name == "maskclip":  # value path only
        return layer.self_attn.out_proj(layer.self_attn.v_proj(x_ln))
    raise ValueError(name)


def head(model, x, grid):
    y = model.visual_projection(model.vision_model.post_layernorm(x))[:, 1:]
    b, n, e = y.shape
    return y.transpose(1, 2).reshape(b, e, *grid)


def vision_run(model, crops):
    vm = model.vision_model
    cfg = model.config.vision_config
    heads, p = cfg.num_attention_heads, cfg.patch_size
    base = cfg.image_size // p
    emb = vm.embeddings
    patches = emb.patch_embedding(crops)  # (B, D, gh, gw); the conv drops the remainder
    b, d, gh, gw = patches.shape
    x = patches.flatten(2).transpose(1, 2)
    x = torch.cat([emb.class_embedding.expand(b, 1, d), x], 1)
    pos = interp_pos(emb.position_embedding.weight, (gh, gw), base)
    x = vm.pre_layrnorm(x + pos)
    hidden, attn, qkv = [], [], []
    for layer in vm.encoder.layers[:-1]:
        x, pr, t = vanilla_block(layer, x, heads)
        hidden.append(x)
        attn.append(pr)
        qkv.append(t)
    last = vm.encoder.layers[-1]
    qkv.append(qkv_of(last, last.layer_norm1(x), heads))
    return dict(pos=pos, hidden=hidden, attn=attn, qkv=qkv, grid=(gh, gw), x=x, last=last,
                heads=heads)


def load_open_clip_tokenizer():
    import site
    for sp in sys.path + site.getsitepackages() + [site.getusersitepackages()]:
        p = Path(sp or ".") / "open_clip" / "tokenizer.py"
        if p.exists():
            spec = importlib.util.spec_from_file_location("oc_tokenizer", p)
            m = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(m)
            return m.tokenize
    sys.exit("open_clip_torch is not installed: pip install --no-deps open_clip_torch==3.3.0 ftfy wcwidth")


def text_features(model, ids):
    """OpenAI-style text encoding: causal mask, EOT = argmax of ids, final LN, projection."""
    tm = model.text_model
    heads = model.config.text_config.num_attention_heads
    x = tm.embeddings.token_embedding(ids) + tm.embeddings.position_embedding.weight[: ids.shape[1]]
    t = ids.shape[1]
    mask = torch.full((t, t), float("-inf")).triu(1)
    for layer in tm.encoder.layers:
        q, k, v = qkv_of(layer, layer.layer_norm1(x), heads)
        p = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + mask, -1)
        x = x + layer.self_attn.out_proj(heads_merge(p @ v))
        x = x + layer.mlp(layer.layer_norm2(x))
    x = tm.final_layer_norm(x)
    pooled = x[torch.arange(ids.shape[0]), ids.argmax(-1)]
    return model.text_projection(pooled)


def check_against_transformers(model, crops, ids, run):
    """The manual forward above must equal transformers' own forward."""
    with torch.no_grad():
        hs = model.vision_model(pixel_values=crops, output_hidden_states=True).hidden_states
        for i, h in enumerate(run["hidden"]):
            err = (hs[i + 1] - h).abs().max().item()
            assert err < 1e-4, f"layer {i + 1}: manual vs transformers {err}"
        tf = model.get_text_features(input_ids=ids)
        tf = getattr(tf, "pooler_output", tf)
        err = (tf - text_features(model, ids)).abs().max().item()
        assert err < 1e-4, f"text: manual vs transformers {err}"


def make_goldens():
    model = CLIPModel.from_pretrained(str(FIX_MODEL), dtype=torch.float32).eval()
    tokenize = load_open_clip_tokenizer()
    ids = tokenize(PROMPTS).long()
    g = {"tokens": ids.to(torch.int64)}
    with torch.no_grad():
        te = text_features(model, ids)
        g["text.emb"] = te / te.norm(dim=-1, keepdim=True)

        # Batch A: two 224×224 crops (the 14×14 grid, no interpolation).
        a = synthetic_crops(2, 224, 224)
        ra = vision_run(model, a)
        check_against_transformers(model, a, ids, ra)
        g["a.hidden.11"] = ra["hidden"][10]
        g["a.attn.6"] = ra["attn"][5][:, :, :8, :]  # first 8 rows keep the fixture small
        out = strategy("sclip", ra["last"], ra["x"], ra["heads"], ra["grid"])
        g["a.out.sclip"] = out
        g["a.head.sclip"] = head(model, out, ra["grid"])

        # Batch B: one whole image of 170×250 → (10, 15) grid, remainder dropped, pos interpolated.
        b = synthetic_crops(1, 170, 250)
        rb = vision_run(model, b)
        g["b.pos"] = rb["pos"]
        for l in (1, 11):
            g[f"b.hidden.{l}"] = rb["hidden"][l - 1]
        g["b.attn.7"] = rb["attn"][6][:, :, :16, :]
        for i, n in enumerate("qkv"):
            g[f"b.qkv.12.{n}"] = rb["qkv"][11][i][:, :, :32, :]  # rows 0..32 (size)
            g[f"b.qkv.8.{n}"] = rb["qkv"][7][i][:, :, :16, :]
        for s in ("vanilla", "sclip", "naclip", "maskclip"):
            out = strategy(s, rb["last"], rb["x"], rb["heads"], rb["grid"])
            g[f"b.out.{s}"] = out
            g[f"b.head.{s}"] = head(model, out, rb["grid"])
        g["b.gauss"] = gaussian_prior(rb["grid"], SIGMA)[:20]

        # Standalone pos-embed interpolation on a larger non-square grid (8 channels suffice:
        # the interpolation is per channel).
        base = model.config.vision_config.image_size // model.config.vision_config.patch_size
        pos = model.vision_model.embeddings.position_embedding.weight
        g["pos.21x31"] = interp_pos(pos, LONG_GRID, base)[:, :8]
        g["pos.9x12"] = interp_pos(pos, (9, 12), base)[:, :8]

    FIX_GOLD.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() if v.dtype == torch.int64 else v.float().contiguous()
               for k, v in g.items()}, str(FIX_GOLD / "goldens.safetensors"))
    meta = dict(
        prompts=PROMPTS, sigma=SIGMA,
        a=dict(shape=[2, 3, 224, 224]), b=dict(shape=[1, 3, 170, 250], grid=list(rb["grid"])),
        input="x[b,c,i,j] = 1.5*sin(0.13 i + 0.07 j (c+1) + 0.9 b) + ((7i + 13j + 5c + 11b) mod 23)/11 - 1",
        made_by="tests/reference/make_tiny_clip.py",
        torch=torch.__version__,
    )
    (FIX_GOLD / "goldens.json").write_text(json.dumps(meta, indent=1) + "\n")
    for k, v in g.items():
        print(f"{k:16s} {tuple(v.shape)}")


def speed(model_dir: str, batch: int) -> None:
    """PyTorch counterpart of `cargo run --release -p segsweep-clip --example clip_speed`:
    prefix + SCLIP last block + head per 224² crop, and the 56×80-prompt text classifier, f32,
    all cores (torch's default thread count)."""
    import time
    model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        def run():
            r = vision_run(model, x)
            return head(model, strategy("sclip", r["last"], r["x"], r["heads"], r["grid"]), r["grid"])
        run()
        reps = 3
        t = time.perf_counter()
        for _ in range(reps):
            run()
        ms = (time.perf_counter() - t) * 1e3 / (reps * batch)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"vision: {ms:.1f} ms per 224² crop (batch {batch}, prefix + sclip + head)")
        tokenize = load_open_clip_tokenizer()
        prompts = [t.format(f"class name {i}") for i in range(56) for t in TEMPLATES_FOR_SPEED]
        t = time.perf_counter()
        ids = tokenize(prompts).long()
        for chunk in ids.split(256):
            f = text_features(model, chunk)
            f = f / f.norm(dim=-1, keepdim=True)
        print(f"text: {time.perf_counter() - t:.2f} s for 56 queries × 80 templates (cold, 77 tokens)")


# Only the count and lengths matter for timing; these are the first 8 OpenAI templates × 10.
TEMPLATES_FOR_SPEED = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.",
] * 10


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", metavar="DIR", help="write a seeded random full ViT-B/16 (f32) to DIR")
    ap.add_argument("--speed", metavar="DIR", help="time the PyTorch reference on the model in DIR")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.speed:
        speed(args.speed, args.batch)
        return
    if args.full:
        build(FULL_B16, Path(args.full), torch.float32, "random-fixture")
        print(f"wrote {args.full}")
        return
    build(TINY, FIX_MODEL, torch.float16, "random-fixture")
    make_goldens()
    total = sum(f.stat().st_size for d in (FIX_MODEL, FIX_GOLD) for f in d.iterdir())
    print(f"fixture size {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

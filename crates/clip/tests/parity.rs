//! Parity of the candle towers with the PyTorch reference on the tiny random fixture
//! (`tests/reference/make_tiny_clip.py`; goldens in `tests/fixtures/clip/goldens.safetensors`).
//!
//! Tolerance: max |a − b| ≤ 1e-4 · max(1, max |b|) in f32 (stated per check below). The fixture
//! weights are f16 on disk and upcast to f32 on both sides, so both compute the same function.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use segsweep_clip::{attention, ClipModel};
use segsweep_core::{Backbone, Needs};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> &'static ClipModel {
    static M: OnceLock<ClipModel> = OnceLock::new();
    M.get_or_init(|| {
        let dir = root().join("tests/fixtures/tiny-clip");
        ClipModel::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).expect("fixture loads")
    })
}

fn goldens() -> &'static HashMap<String, Tensor> {
    static G: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    G.get_or_init(|| {
        candle_core::safetensors::load(
            root().join("tests/fixtures/clip/goldens.safetensors"),
            &Device::Cpu,
        )
        .expect("goldens load")
    })
}

fn gold(name: &str) -> Tensor {
    goldens()
        .get(name)
        .unwrap_or_else(|| panic!("golden {name} missing"))
        .clone()
}

/// The input formula of the fixture script (`synthetic_crops`), in f64 then f32.
fn synthetic_crops(b: usize, h: usize, w: usize) -> Tensor {
    let mut v = Vec::with_capacity(b * 3 * h * w);
    for bb in 0..b {
        for c in 0..3 {
            for i in 0..h {
                for j in 0..w {
                    let smooth = 1.5
                        * (0.13 * i as f64 + 0.07 * (j * (c + 1)) as f64 + 0.9 * bb as f64).sin();
                    let texture = ((i * 7 + j * 13 + c * 5 + bb * 11) % 23) as f64 / 11.0 - 1.0;
                    v.push((smooth + texture) as f32);
                }
            }
        }
    }
    Tensor::from_vec(v, (b, 3, h, w), &Device::Cpu).unwrap()
}

/// Max abs error relative to max(1, max |golden|); asserts it is ≤ tol and returns it.
fn check(name: &str, got: &Tensor, want: &Tensor, tol: f32) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let got = got.to_dtype(DType::F32).unwrap();
    let err: f32 = (&got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let scale: f32 = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    let rel = err / scale;
    eprintln!("{name:18} max abs err {err:.3e}  rel {rel:.3e}");
    assert!(rel <= tol, "{name}: relative error {rel:.3e} > {tol:.0e}");
    rel
}

const TOL: f32 = 1e-4;

fn needs(attn: &[usize], qkv: &[usize]) -> Needs {
    Needs {
        attn_probs: attn.iter().copied().collect::<BTreeSet<_>>(),
        qkv: qkv.iter().copied().collect::<BTreeSet<_>>(),
    }
}

#[test]
fn tokens_match_open_clip() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/clip/goldens.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<Vec<i64>> = gold("tokens").to_vec2().unwrap();
    for (p, want) in meta["prompts"].as_array().unwrap().iter().zip(want) {
        let mut got: Vec<i64> = model()
            .tokenizer()
            .encode(p.as_str().unwrap())
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        got.resize(77, 0);
        assert_eq!(got, want, "{p}");
    }
}

fn prompts() -> Vec<String> {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/clip/goldens.json")).unwrap(),
    )
    .unwrap();
    meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn text_embeddings_match() {
    let got = model().encode_text(&prompts()).unwrap();
    check("text.emb", &got, &gold("text.emb"), TOL);
}

#[test]
fn shortened_text_run_equals_full_context_run() {
    // Issue 3: running each batch only to its longest prompt must equal the 77-token run.
    let ps = prompts();
    let short = model().encode_text(&ps).unwrap();
    let full = model().encode_text_full_context(&ps).unwrap();
    let err: f32 = (&short - &full)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    eprintln!("short vs 77-token run: max abs err {err:.3e}");
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn batch_a_224_crops_match() {
    let crops = synthetic_crops(2, 224, 224);
    let out = model().prefix(&crops, &needs(&[6], &[])).unwrap();
    assert_eq!(out.grid, (14, 14));
    check("a.hidden.11", &out.tokens, &gold("a.hidden.11"), TOL);
    check(
        "a.attn.6",
        &out.attn_probs[&6].narrow(2, 0, 8).unwrap(),
        &gold("a.attn.6"),
        TOL,
    );
    let y = attention::sclip(model().last_block(), &out.tokens).unwrap();
    check("a.out.sclip", &y, &gold("a.out.sclip"), TOL);
    check(
        "a.head.sclip",
        &model().head(&y, out.grid).unwrap(),
        &gold("a.head.sclip"),
        TOL,
    );
}

#[test]
fn batch_b_whole_image_matches() {
    // 170×250 → (10, 15) grid: the conv remainder is dropped and the positions interpolated.
    let crops = synthetic_crops(1, 170, 250);
    let out = model().prefix(&crops, &needs(&[7], &[8, 12])).unwrap();
    assert_eq!(out.grid, (10, 15));
    check(
        "b.pos",
        &model().pos_embed((10, 15)).unwrap(),
        &gold("b.pos"),
        TOL,
    );
    check("b.hidden.11", &out.tokens, &gold("b.hidden.11"), TOL);
    check(
        "b.attn.7",
        &out.attn_probs[&7].narrow(2, 0, 16).unwrap(),
        &gold("b.attn.7"),
        TOL,
    );
    let (q, k, v) = &out.qkv[&12];
    for (n, t) in [("q", q), ("k", k), ("v", v)] {
        check(
            &format!("b.qkv.12.{n}"),
            &t.narrow(2, 0, 32).unwrap(),
            &gold(&format!("b.qkv.12.{n}")),
            TOL,
        );
    }
    let (q, k, v) = &out.qkv[&8];
    for (n, t) in [("q", q), ("k", k), ("v", v)] {
        check(
            &format!("b.qkv.8.{n}"),
            &t.narrow(2, 0, 16).unwrap(),
            &gold(&format!("b.qkv.8.{n}")),
            TOL,
        );
    }
    for s in attention::BUILTIN {
        let ctx = segsweep_core::AttentionCtx {
            backbone: model(),
            x: &out.tokens,
            grid: out.grid,
            prefix: &out,
            crops: &crops,
            text: &Tensor::zeros((1, 16), DType::F32, &Device::Cpu).unwrap(),
        };
        let y = model().builtin_attention(s, ctx.x, ctx.grid).unwrap();
        check(&format!("b.out.{s}"), &y, &gold(&format!("b.out.{s}")), TOL);
        check(
            &format!("b.head.{s}"),
            &model().head(&y, out.grid).unwrap(),
            &gold(&format!("b.head.{s}")),
            TOL,
        );
    }
}

#[test]
fn per_layer_tokens_match() {
    let crops = synthetic_crops(1, 170, 250);
    let hs = model().hidden_states(&crops).unwrap();
    assert_eq!(hs.len(), 11);
    check("b.hidden.1", &hs[0], &gold("b.hidden.1"), TOL);
    check("b.hidden.11 (hs)", &hs[10], &gold("b.hidden.11"), TOL);
}

#[test]
fn gaussian_prior_matches() {
    let p = attention::gaussian_prior((10, 15), 5.0, &Device::Cpu).unwrap();
    check(
        "b.gauss",
        &p.narrow(0, 0, 20).unwrap(),
        &gold("b.gauss"),
        1e-6,
    );
}

#[test]
fn pos_interpolation_matches_torch_bicubic() {
    for (name, grid) in [("pos.21x31", (21, 31)), ("pos.9x12", (9, 12))] {
        let p = model().pos_embed(grid).unwrap().narrow(1, 0, 8).unwrap();
        check(name, &p, &gold(name), 1e-5);
    }
}

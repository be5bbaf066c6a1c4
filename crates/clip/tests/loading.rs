//! Loading paths: local directory, Hugging Face cache (offline), built-in generated model,
//! dtypes, and the error messages users see.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segsweep_clip::{ClipError, ClipModel, HubEnv};
use segsweep_core::{Backbone, Needs, WeightsKind};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-clip")
}

fn crops(b: usize, h: usize, w: usize) -> Tensor {
    let n = b * 3 * h * w;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(v, (b, 3, h, w), &Device::Cpu).unwrap()
}

fn offline_env(home: &Path) -> HubEnv {
    HubEnv {
        home: Some(home.to_path_buf()),
        offline: true,
        endpoint: None,
    }
}

/// `$HF_HOME/hub/models--org--name/{refs/main, snapshots/<rev>/...}` as hf-hub writes it, with
/// the weights as a link into `blobs/<sha256>`.
fn fake_hf_cache(home: &Path, repo: &str) -> PathBuf {
    let folder = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let rev = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), rev).unwrap();
    let snap = folder.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let blob = folder.join("blobs").join(sha256_hex(&bytes));
    std::fs::write(&blob, &bytes).unwrap();
    std::os::unix::fs::symlink(&blob, snap.join("model.safetensors")).unwrap();
    std::fs::copy(fixture_dir().join("config.json"), snap.join("config.json")).unwrap();
    snap
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn local_directory_loads_with_fixture_kind_and_hash() {
    let m = ClipModel::load(fixture_dir().to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let info = m.info();
    assert_eq!(info.weights, WeightsKind::RandomFixture);
    assert_eq!(
        (info.patch_size, info.image_size, info.width, info.embed_dim),
        (16, 224, 32, 16)
    );
    assert_eq!((info.layers, info.heads), (12, 2));
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    assert_eq!(info.file_hash, sha256_hex(&bytes)[..16]);
    assert_eq!(info.dtype, "f32");
    assert_eq!(info.device, "cpu");
}

#[test]
fn repo_id_resolves_from_the_local_hf_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    fake_hf_cache(home.path(), "segsweep/tiny-clip");
    let local = ClipModel::load(fixture_dir().to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let hub = ClipModel::load_with_hub(
        "segsweep/tiny-clip",
        &Device::Cpu,
        DType::F32,
        &offline_env(home.path()),
    )
    .unwrap();
    assert_eq!(hub.info().model_id, "segsweep/tiny-clip");
    // The blob name is the sha256: same short hash as hashing the bytes.
    assert_eq!(hub.info().file_hash, local.info().file_hash);
    // No segsweep-fixture.json in the snapshot: a hub model counts as real weights.
    assert_eq!(hub.info().weights, WeightsKind::Real);
    let p = ["a photo of a person.".to_string()];
    let d = (local.encode_text(&p).unwrap() - hub.encode_text(&p).unwrap()).unwrap();
    assert_eq!(
        d.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn repo_id_missing_offline_says_how_to_download() {
    let home = tempfile::tempdir().unwrap();
    let e = ClipModel::load_with_hub(
        "openai/clip-vit-base-patch16",
        &Device::Cpu,
        DType::F32,
        &offline_env(home.path()),
    )
    .unwrap_err();
    assert!(matches!(e, ClipError::Offline { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("HF_HUB_OFFLINE") && msg.contains("download"),
        "{msg}"
    );
    assert!(msg.contains("openai/clip-vit-base-patch16"), "{msg}");
}

/// `models/clip` with a local `models/` is a mistyped path, not a repo id: no hub lookup, and
/// `hf:` says "the hub" explicitly.
#[test]
fn a_two_part_path_under_an_existing_directory_is_not_sent_to_the_hub() {
    let home = tempfile::tempdir().unwrap();
    fake_hf_cache(home.path(), "segsweep/tiny-clip");
    let local = tempfile::Builder::new()
        .prefix("models")
        .tempdir_in(".")
        .unwrap();
    let name = local.path().file_name().unwrap().to_str().unwrap();
    let source = format!("{name}/clip");
    let e = ClipModel::load_with_hub(&source, &Device::Cpu, DType::F32, &offline_env(home.path()))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&source) && msg.contains(&format!("hf:{source}")),
        "{msg}"
    );
    assert!(!matches!(e, ClipError::Offline { .. }), "{msg}");
    // `hf:` forces the hub (here: the fake offline cache).
    let hub = ClipModel::load_with_hub(
        "hf:segsweep/tiny-clip",
        &Device::Cpu,
        DType::F32,
        &offline_env(home.path()),
    )
    .unwrap();
    assert_eq!(hub.info().weights, WeightsKind::Real);
    for bad in ["hf:", "hf:../../etc", "hf:org/name/extra"] {
        let e = ClipModel::load_with_hub(bad, &Device::Cpu, DType::F32, &offline_env(home.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("org/name"), "{bad}: {e}");
    }
}

#[test]
fn hub_env_reads_hf_home_and_offline() {
    // The only test that touches these variables (tests run in threads of one process).
    std::env::set_var("HF_HOME", "/tmp/segsweep-hf-home-test");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let env = HubEnv::from_env();
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("HF_HOME");
    assert_eq!(env.home, Some(PathBuf::from("/tmp/segsweep-hf-home-test")));
    assert!(env.offline);
}

#[test]
fn bad_sources_name_the_problem() {
    let e = ClipModel::load("no such thing", &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such thing") && e.contains("repo id"), "{e}");
    let e = ClipModel::load("builtin:huge", &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("builtin:tiny-random"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = ClipModel::load(empty.path().to_str().unwrap(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
    let e = ClipModel::load("builtin:tiny-random", &Device::Cpu, DType::U8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dtype"), "{e}");
}

#[test]
fn missing_tensor_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &[("nothing", t)].into_iter().collect(),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let e = ClipModel::load(dir.path().to_str().unwrap(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("vision_model"),
        "{e}"
    );
}

#[test]
fn builtin_tiny_random_is_deterministic_and_synthetic() {
    let a = ClipModel::load("builtin:tiny-random", &Device::Cpu, DType::F32).unwrap();
    let b = ClipModel::load("builtin:tiny-random", &Device::Cpu, DType::F32).unwrap();
    assert_eq!(a.info().weights, WeightsKind::Synthetic);
    let x = crops(1, 64, 96);
    let ta = a.prefix(&x, &Needs::default()).unwrap().tokens;
    let tb = b.prefix(&x, &Needs::default()).unwrap().tokens;
    assert_eq!(ta.to_vec3::<f32>().unwrap(), tb.to_vec3::<f32>().unwrap());
    // Non-degenerate: patch features differ across positions.
    let f = a.head(&ta, (4, 6)).unwrap();
    assert_eq!(f.dims(), &[1, 16, 4, 6]);
    let std: f32 = f
        .flatten_all()
        .unwrap()
        .var(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(std > 1e-3, "{std}");
}

#[test]
fn half_precision_stays_close_to_f32() {
    let x = crops(1, 64, 80);
    let full = ClipModel::load(fixture_dir().to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let want = full
        .head(&full.prefix(&x, &Needs::default()).unwrap().tokens, (4, 5))
        .unwrap();
    let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    for dt in [DType::F16, DType::BF16] {
        let m = ClipModel::load(fixture_dir().to_str().unwrap(), &Device::Cpu, dt).unwrap();
        assert_eq!(m.info().dtype, dt.as_str());
        let got = m
            .head(&m.prefix(&x, &Needs::default()).unwrap().tokens, (4, 5))
            .unwrap();
        assert_eq!(got.dtype(), DType::F32);
        let err: f32 = (&got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        // 12 random layers in half precision: a few % of the range (bf16 has 8 mantissa bits).
        let tol = if dt == DType::F16 { 0.02 } else { 0.15 };
        assert!(err / scale < tol, "{dt:?}: {err} vs scale {scale}");
        let t = m.encode_text(&["a photo of a cat.".to_string()]).unwrap();
        assert_eq!(t.dtype(), DType::F32);
    }
}

#[test]
fn prefix_rejects_layers_out_of_range() {
    let m = ClipModel::load("builtin:tiny-random", &Device::Cpu, DType::F32).unwrap();
    let needs = Needs {
        attn_probs: [13].into_iter().collect(),
        qkv: Default::default(),
    };
    let e = m.prefix(&crops(1, 32, 32), &needs).unwrap_err().to_string();
    assert!(e.contains("13") && e.contains("1..=12"), "{e}");
    let e = m
        .prefix(&crops(1, 8, 32), &Needs::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("(B, 3, H, W)"), "{e}");
}

#[test]
fn unknown_attention_strategy_lists_the_builtins() {
    let m = ClipModel::load("builtin:tiny-random", &Device::Cpu, DType::F32).unwrap();
    let x = crops(1, 32, 48);
    let out = m.prefix(&x, &Needs::default()).unwrap();
    let text = Tensor::zeros((1, 16), DType::F32, &Device::Cpu).unwrap();
    let ctx = segsweep_core::AttentionCtx {
        backbone: &m,
        x: &out.tokens,
        grid: out.grid,
        prefix: &out,
        crops: &x,
        text: &text,
    };
    let e = m
        .builtin_attention("csa", ctx.x, ctx.grid)
        .unwrap_err()
        .to_string();
    assert!(e.contains("vanilla, sclip, naclip, maskclip"), "{e}");
    assert_eq!(
        m.builtin_attention_names(),
        &["vanilla", "sclip", "naclip", "maskclip"]
    );
}

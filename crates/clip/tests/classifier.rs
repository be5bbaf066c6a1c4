//! The text classifier: template averaging and the on-disk cache.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use segsweep_clip::{build_classifier, parse_class_names, ClipModel, IMAGENET_TEMPLATES};
use segsweep_core::{Backbone, BackboneInfo, LastBlock, Needs, PrefixOut};

/// Delegates to a real model and counts text-tower calls.
struct Counting {
    inner: ClipModel,
    calls: AtomicUsize,
    prompts: AtomicUsize,
}

impl Backbone for Counting {
    fn info(&self) -> &BackboneInfo {
        self.inner.info()
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn prefix(&self, crops: &Tensor, needs: &Needs) -> segsweep_core::Result<PrefixOut> {
        self.inner.prefix(crops, needs)
    }
    fn last_block(&self) -> &dyn LastBlock {
        self.inner.last_block()
    }
    fn builtin_attention(
        &self,
        name: &str,
        x: &Tensor,
        grid: (usize, usize),
    ) -> segsweep_core::Result<Tensor> {
        self.inner.builtin_attention(name, x, grid)
    }
    fn builtin_attention_names(&self) -> &'static [&'static str] {
        self.inner.builtin_attention_names()
    }
    fn head(&self, tokens: &Tensor, grid: (usize, usize)) -> segsweep_core::Result<Tensor> {
        self.inner.head(tokens, grid)
    }
    fn encode_text(&self, prompts: &[String]) -> segsweep_core::Result<Tensor> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.prompts.fetch_add(prompts.len(), Ordering::SeqCst);
        self.inner.encode_text(prompts)
    }
}

fn counting() -> Counting {
    Counting {
        inner: ClipModel::load("builtin:tiny-random", &Device::Cpu, DType::F32).unwrap(),
        calls: AtomicUsize::new(0),
        prompts: AtomicUsize::new(0),
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn classifier_is_the_normalised_mean_of_normalised_template_embeddings() {
    let m = counting();
    let classes = parse_class_names("sky, wall\nperson\n");
    let templates = ["a photo of a {}.", "itap of the {}.", "{}"];
    let c = build_classifier(&m, &classes, &templates, None).unwrap();
    assert_eq!(c.queries, vec!["sky", "wall", "person"]);
    assert_eq!(c.query_class, vec![0, 0, 1]);
    assert_eq!(c.class_names, vec!["sky", "person"]);
    assert_eq!(c.text.dims(), &[3, 16]);
    // By hand for "wall": encode its three prompts, mean, normalise.
    let p: Vec<String> = templates.iter().map(|t| t.replace("{}", "wall")).collect();
    let e = m.inner.encode_text(&p).unwrap();
    let mean = e.mean_keepdim(0).unwrap();
    let want = segsweep_core::tensor::l2_normalise(&mean, 1).unwrap();
    assert!(max_abs(&c.text.narrow(0, 1, 1).unwrap(), &want) < 1e-6);
    // One batched call for all Q × templates prompts.
    assert_eq!(m.calls.load(Ordering::SeqCst), 1);
    assert_eq!(m.prompts.load(Ordering::SeqCst), 9);
}

#[test]
fn second_build_is_a_cache_read() {
    let dir = tempfile::tempdir().unwrap();
    let m = counting();
    let classes = parse_class_names("background\ncat, kitten\ndog\n");
    let a = build_classifier(&m, &classes, &IMAGENET_TEMPLATES, Some(dir.path())).unwrap();
    assert_eq!(m.calls.load(Ordering::SeqCst), 1);
    assert_eq!(m.prompts.load(Ordering::SeqCst), 4 * 80);
    let b = build_classifier(&m, &classes, &IMAGENET_TEMPLATES, Some(dir.path())).unwrap();
    assert_eq!(
        m.calls.load(Ordering::SeqCst),
        1,
        "the cached run must not call the text tower"
    );
    assert_eq!(max_abs(&a.text, &b.text), 0.0);
    assert_eq!(b.queries, a.queries);
    // Exactly one cache file, no temp files left behind.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // A different name set or template set is a different key.
    let other = parse_class_names("background\ncat\ndog\n");
    build_classifier(&m, &other, &IMAGENET_TEMPLATES, Some(dir.path())).unwrap();
    build_classifier(&m, &classes, &IMAGENET_TEMPLATES[..10], Some(dir.path())).unwrap();
    assert_eq!(m.calls.load(Ordering::SeqCst), 3);
}

#[test]
fn corrupt_cache_file_is_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let m = counting();
    let classes = parse_class_names("a\nb\n");
    build_classifier(&m, &classes, &["{}"], Some(dir.path())).unwrap();
    let f = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&f, b"garbage").unwrap();
    let c = build_classifier(&m, &classes, &["{}"], Some(dir.path())).unwrap();
    assert_eq!(m.calls.load(Ordering::SeqCst), 2);
    assert_eq!(c.text.dims(), &[2, 16]);
}

/// The cache only saves time: a cache "directory" that is a file is no reason to fail.
#[test]
fn an_unwritable_cache_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let m = counting();
    let classes = parse_class_names("a\nb\n");
    let c = build_classifier(&m, &classes, &["{}"], Some(&file)).unwrap();
    assert_eq!(c.text.dims(), &[2, 16]);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn bad_inputs_are_errors() {
    let m = counting();
    assert!(build_classifier(&m, &[], &["{}"], None).is_err());
    let e = build_classifier(&m, &parse_class_names("a\n"), &["no placeholder"], None).unwrap_err();
    assert!(e.to_string().contains("{}"), "{e}");
}

//! The zero-shot text classifier: class-name files, the 80 ImageNet templates, template
//! averaging, and an on-disk cache so that a second run of the same classes costs a file read.
//!
//! Reference: SCLIP `clip_segmentor.py:35-44` (encoding) and `:201-212` (`get_cls_idx`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use segsweep_core::{Backbone, Classifier};
use sha2::{Digest, Sha256};

use crate::error::ClipError;

/// OpenAI's 80 ImageNet prompt templates (CLIP's "Prompt Engineering for ImageNet" notebook;
/// SCLIP `prompts/imagenet_template.py`, `openai_imagenet_template`), `{}` = the class name.
pub const IMAGENET_TEMPLATES: [&str; 80] = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
];

/// Parse a class-name file in SCLIP's format: one class per line, synonyms separated by
/// exactly `", "`; every synonym becomes its own query. Like Python's `readlines()`, then
/// `split(', ')` and `replace('\n', '')`: spaces are kept (context60's `wood ` keeps its trailing
/// space) and a final newline does not add a class.
///
/// Deviation: a `\r` before the newline is dropped too, so CRLF files give the same classes.
pub fn parse_class_names(text: &str) -> Vec<Vec<String>> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() && text.len() <= 1 {
        return Vec::new();
    }
    body.split('\n')
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            line.split(", ").map(str::to_string).collect()
        })
        .collect()
}

/// Encode every query with every template, L2-normalise each prompt's embedding, average over
/// the templates and normalise again (SCLIP). `classes[c]` lists class c's synonyms; the result
/// has one row per synonym, `text: (Q, E)` f32.
///
/// With `cache_dir`, the `(Q, E)` matrix is stored as `text-<key>.safetensors`, keyed by the
/// model's weights hash and dtype, the templates and the query names; a later call with the same
/// key reads the file and never runs the text tower. Files are written atomically (temp file +
/// rename), so concurrent runs cannot read half a file.
pub fn build_classifier(
    model: &dyn Backbone,
    classes: &[Vec<String>],
    templates: &[&str],
    cache_dir: Option<&Path>,
) -> segsweep_core::Result<Classifier> {
    if classes.is_empty() || classes.iter().any(|c| c.is_empty()) {
        return Err(ClipError::Invalid(
            "the class list is empty (or has a class without names)".into(),
        )
        .into());
    }
    if templates.is_empty() || templates.iter().any(|t| !t.contains("{}")) {
        return Err(ClipError::Invalid("every prompt template must contain `{}`".into()).into());
    }
    let mut queries = Vec::new();
    let mut query_class = Vec::new();
    for (c, names) in classes.iter().enumerate() {
        for n in names {
            queries.push(n.clone());
            query_class.push(c);
        }
    }
    let class_names = classes.iter().map(|c| c[0].clone()).collect();
    let cache_file = cache_dir.map(|d| {
        d.join(format!(
            "text-{}.safetensors",
            cache_key(model, templates, &queries)
        ))
    });
    let text = match cache_file
        .as_deref()
        .and_then(|f| read_cached(f, queries.len(), model))
    {
        Some(t) => t,
        None => {
            let t = encode_queries(model, &queries, templates)?;
            if let Some(f) = &cache_file {
                // The cache only saves time: a cache directory that cannot be written (a file
                // in its place, no permission, a full disk) is worth a warning, not the run.
                if let Err(e) = write_atomic(f, &t) {
                    tracing::warn!(
                        "cannot cache the text classifier ({e}); continuing without the cache (a sweep caches under <output_dir>/.cache, `predict` under $SEGSWEEP_CACHE, default ~/.cache/segsweep: make that directory writable to keep it)"
                    );
                }
            }
            t
        }
    };
    Ok(Classifier {
        text,
        query_class,
        queries,
        class_names,
    })
}

/// `(Q, E)`: per query, the normalised mean of its normalised template embeddings.
fn encode_queries(
    model: &dyn Backbone,
    queries: &[String],
    templates: &[&str],
) -> segsweep_core::Result<Tensor> {
    let prompts: Vec<String> = queries
        .iter()
        .flat_map(|q| templates.iter().map(move |t| t.replace("{}", q)))
        .collect();
    // encode_text batches internally and returns rows already L2-normalised.
    let emb = model.encode_text(&prompts)?.to_dtype(DType::F32)?;
    let e = emb.dim(1)?;
    let mean = emb.reshape((queries.len(), templates.len(), e))?.mean(1)?;
    segsweep_core::tensor::l2_normalise(&mean, 1)
}

fn cache_key(model: &dyn Backbone, templates: &[&str], queries: &[String]) -> String {
    let info = model.info();
    let mut h = Sha256::new();
    h.update(b"segsweep-text-classifier-v1\0");
    for part in [
        info.file_hash.as_str(),
        info.model_id.as_str(),
        info.dtype.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    // Lengths first, so that no two different lists serialise to the same bytes.
    h.update((templates.len() as u64).to_le_bytes());
    for t in templates {
        h.update(t.as_bytes());
        h.update(b"\0");
    }
    h.update((queries.len() as u64).to_le_bytes());
    for q in queries {
        h.update(q.as_bytes());
        h.update(b"\0");
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cached matrix if the file exists and has the right shape; anything else is a miss.
fn read_cached(path: &Path, q: usize, model: &dyn Backbone) -> Option<Tensor> {
    let mut map = candle_core::safetensors::load(path, model.device()).ok()?;
    let t = map.remove("text")?;
    (t.dims() == [q, model.info().embed_dim]).then_some(t)
}

fn write_atomic(path: &Path, t: &Tensor) -> segsweep_core::Result<()> {
    let dir: PathBuf = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    let io = |e: std::io::Error| ClipError::io(&dir, e);
    std::fs::create_dir_all(&dir).map_err(io)?;
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
    candle_core::safetensors::save(&[("text", t.clone())].into_iter().collect(), tmp.path())?;
    tmp.persist(path)
        .map_err(|e| ClipError::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sclip_class_file_format() {
        let text = "sky, wall, tree\nperson, person in shirt\nwood \n";
        assert_eq!(
            parse_class_names(text),
            vec![
                vec!["sky".to_string(), "wall".into(), "tree".into()],
                vec!["person".into(), "person in shirt".into()],
                vec!["wood ".into()],
            ]
        );
        // No final newline (context60) and "," without a space is not a separator.
        assert_eq!(
            parse_class_names("a,b\nwood "),
            vec![vec!["a,b".to_string()], vec!["wood ".into()]]
        );
        assert_eq!(
            parse_class_names("x\r\ny\r\n"),
            vec![vec!["x".to_string()], vec!["y".into()]]
        );
        assert!(parse_class_names("").is_empty());
    }

    #[test]
    fn eighty_distinct_templates() {
        let set: std::collections::BTreeSet<_> = IMAGENET_TEMPLATES.iter().collect();
        assert_eq!(set.len(), 80);
        assert!(IMAGENET_TEMPLATES
            .iter()
            .all(|t| t.matches("{}").count() == 1));
        assert_eq!(IMAGENET_TEMPLATES[0], "a bad photo of a {}.");
        assert_eq!(IMAGENET_TEMPLATES[79], "a tattoo of the {}.");
    }
}

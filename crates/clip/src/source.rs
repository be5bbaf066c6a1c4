//! Where weights come from: a local directory, a Hugging Face repo id (through `hf-hub`'s cache
//! and API), or a generated built-in model; plus the weights-file hash that keys caches.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{ClipError, Result};

/// The files a model is loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// Directory holding `config.json` (for a hub snapshot: `snapshots/<rev>/`).
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `model.safetensors`, or `pytorch_model.bin` when no safetensors file exists.
    pub weights: PathBuf,
    /// `tokenizer.json`, when the model ships one (else the built-in OpenAI vocabulary is used).
    pub tokenizer: Option<PathBuf>,
}

/// Weights file names, in order of preference.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// The files of a local model directory.
pub fn local_files(dir: &Path) -> Result<ModelFiles> {
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(ClipError::Source {
            spec: dir.display().to_string(),
            msg:
                "the directory has no config.json (a Hugging Face CLIPModel directory is expected)"
                    .into(),
        });
    }
    let weights = WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| ClipError::Source {
            spec: dir.display().to_string(),
            msg: format!("the directory has neither {}", WEIGHT_FILES.join(" nor ")),
        })?;
    let tokenizer = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
    Ok(ModelFiles {
        dir: dir.to_path_buf(),
        config,
        weights,
        tokenizer,
    })
}

pub use segsweep_hub::{looks_like_repo_id, HubEnv};

/// Resolve a repo id: the local cache first (no network on a hit); then, unless offline, a
/// download with a progress bar into the same cache.
pub fn hub_files(repo: &str, env: &HubEnv) -> Result<ModelFiles> {
    let config = env.cached(repo, "config.json");
    let weights = WEIGHT_FILES.iter().find_map(|f| env.cached(repo, f));
    if let (Some(config), Some(weights)) = (config, weights) {
        return files_in_snapshot(config, weights, env.cached(repo, "tokenizer.json"));
    }
    let hub_err = |file: &str, e: &dyn std::fmt::Display| ClipError::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        msg: e.to_string(),
    };
    let api = env.download(repo, true).map_err(|e| match e {
        segsweep_hub::HubError::Offline { cache } => ClipError::Offline {
            repo: repo.to_string(),
            cache,
        },
        other => hub_err("-", &other),
    })?;
    let config = api
        .get("config.json")
        .map_err(|e| hub_err("config.json", &e))?;
    let weights = match api.get(WEIGHT_FILES[0]) {
        Ok(p) => p,
        Err(first) => api.get(WEIGHT_FILES[1]).map_err(|second| {
            hub_err(
                &WEIGHT_FILES.join(" / "),
                &format!(
                    "{}: {first}; {}: {second}",
                    WEIGHT_FILES[0], WEIGHT_FILES[1]
                ),
            )
        })?,
    };
    // Optional: without it the built-in vocabulary is used.
    let tokenizer = api.get("tokenizer.json").ok();
    files_in_snapshot(config, weights, tokenizer)
}

fn files_in_snapshot(
    config: PathBuf,
    weights: PathBuf,
    tokenizer: Option<PathBuf>,
) -> Result<ModelFiles> {
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(ModelFiles {
        dir,
        config,
        weights,
        tokenizer,
    })
}

/// Short (16 hex digits) sha256 of a weights file.
///
/// A file in a Hugging Face cache is a link to `blobs/<sha256>` for LFS files, so its name already
/// is the hash and nothing is read. Otherwise the file is hashed in 1 MiB chunks; for files over
/// 64 MiB the result is cached in a sidecar `.<name>.sha256` (keyed by size and mtime) when the
/// directory is writable, so that a multi-GB checkpoint is hashed once.
pub fn file_hash(path: &Path) -> Result<String> {
    let real = std::fs::canonicalize(path).map_err(|e| ClipError::io(path, e))?;
    let in_blobs = real
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "blobs");
    if let Some(name) = real.file_name().and_then(|n| n.to_str()) {
        if in_blobs && name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(name[..16].to_ascii_lowercase());
        }
    }
    let meta = std::fs::metadata(&real).map_err(|e| ClipError::io(&real, e))?;
    let stamp = format!(
        "{} {}",
        meta.len(),
        meta.modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let big = meta.len() > 64 << 20;
    let sidecar = real.with_file_name(format!(
        ".{}.sha256",
        real.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("weights")
    ));
    if big {
        if let Ok(s) = std::fs::read_to_string(&sidecar) {
            if let Some((st, hash)) = s.trim().rsplit_once(' ') {
                if st == stamp && hash.len() == 16 {
                    return Ok(hash.to_string());
                }
            }
        }
    }
    let mut f = std::fs::File::open(&real).map_err(|e| ClipError::io(&real, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ClipError::io(&real, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    if big {
        // Best effort: a read-only model directory just means hashing again next time.
        let _ = std::fs::write(&sidecar, format!("{stamp} {hex}\n"));
    }
    Ok(hex)
}

/// `WeightsKind` from `segsweep-fixture.json` in the model directory (written by the fixture
/// script); `Real` without one. A marker that exists but cannot be read, parsed or understood
/// is an error naming it: failing open to `Real` would label random-weight numbers as real.
pub fn weights_kind(dir: &Path) -> Result<segsweep_core::WeightsKind> {
    let p = dir.join("segsweep-fixture.json");
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(segsweep_core::WeightsKind::Real)
        }
        Err(e) => return Err(ClipError::io(&p, e)),
    };
    let bad = |msg: String| {
        ClipError::Config {
        path: p.clone(),
        msg: format!(
            "{msg} (this marker labels generated weights; expected {{\"weights\": \"random-fixture\"}} or {{\"weights\": \"synthetic\"}}, or delete it for real weights)"
        ),
    }
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    match v.get("weights").and_then(|w| w.as_str()) {
        Some("random-fixture") => Ok(segsweep_core::WeightsKind::RandomFixture),
        Some("synthetic") => Ok(segsweep_core::WeightsKind::Synthetic),
        Some(other) => Err(bad(format!("unknown weights kind `{other}`"))),
        None => Err(bad("no string field `weights`".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognised() {
        assert!(looks_like_repo_id("openai/clip-vit-base-patch16"));
        assert!(!looks_like_repo_id("openai"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("../x"));
        assert!(!looks_like_repo_id("/abs/path"));
    }

    #[test]
    fn hash_of_a_small_file_is_its_sha256_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        std::fs::write(&p, b"abc").unwrap();
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(file_hash(&p).unwrap(), "ba7816bf8f01cfea");
    }

    #[test]
    fn a_fixture_marker_that_cannot_be_understood_is_an_error() {
        use segsweep_core::WeightsKind;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(weights_kind(dir.path()).unwrap(), WeightsKind::Real);
        let marker = dir.path().join("segsweep-fixture.json");
        std::fs::write(&marker, r#"{"weights": "random-fixture"}"#).unwrap();
        assert_eq!(
            weights_kind(dir.path()).unwrap(),
            WeightsKind::RandomFixture
        );
        for bad in [
            r#"{"weights": "random_fixture"}"#,
            "{not json",
            r#"{"kind": 1}"#,
        ] {
            std::fs::write(&marker, bad).unwrap();
            let e = weights_kind(dir.path()).unwrap_err().to_string();
            assert!(e.contains("segsweep-fixture.json"), "{bad}: {e}");
        }
    }
}

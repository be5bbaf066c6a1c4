//! Finding and reading the LoftUp checkpoint: a local `pytorch_model.bin`, a directory holding
//! one, or a Hugging Face repo id (`haiwen/loftup-clip`) looked up in the hf-hub cache first.
//!
//! The file is a zip-format `torch.save(state_dict)`; candle's pickle reader decodes it as data
//! (tensor records and their storage), so nothing in it is executed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{LoftUpError, Result};

/// The released LoftUp checkpoint for CLIP ViT-B/16 (`hubconf.py::loftup_clip`).
pub const DEFAULT_REPO: &str = "haiwen/loftup-clip";
/// The file name inside the repo.
pub const FILE_NAME: &str = "pytorch_model.bin";

pub use segsweep_hub::HubEnv;

/// How to get the file, for error messages.
fn download_hint(repo: &str) -> String {
    format!(
        "Get it with `huggingface-cli download {repo} {FILE_NAME}` (or `hf download {repo} \
         {FILE_NAME}`) into the Hugging Face cache (honours HF_HOME), or download \
         https://huggingface.co/{repo}/resolve/main/{FILE_NAME} and set the plugin parameter \
         `checkpoint = \"/path/to/{FILE_NAME}\"`; unset HF_HUB_OFFLINE to let segsweep download \
         it itself"
    )
}

/// Whether `s` reads as a Hugging Face repo id (`owner/name`) rather than a checkpoint path.
fn is_repo_id(s: &str) -> bool {
    segsweep_hub::looks_like_repo_id(s) && !s.ends_with(".bin") && !s.ends_with(".pth")
}

/// Resolve `source` (a file, a directory with `pytorch_model.bin`, or a repo id) to a local
/// file. A repo id is looked up in the cache first (no network on a hit); on a miss it is
/// downloaded unless `env.offline`. Every failure says how to get the file.
pub fn resolve(source: &str, env: &HubEnv) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        let file = path.join(FILE_NAME);
        if file.is_file() {
            return Ok(file);
        }
        return Err(LoftUpError::CheckpointMissing {
            source_name: source.to_string(),
            reason: format!("the directory has no {FILE_NAME}"),
            hint: download_hint(DEFAULT_REPO),
        });
    }
    if !is_repo_id(source) {
        return Err(LoftUpError::CheckpointMissing {
            source_name: source.to_string(),
            reason: "no such file, and it is not a Hugging Face repo id (owner/name)".into(),
            hint: download_hint(DEFAULT_REPO),
        });
    }
    if let Some(p) = env.cached(source, FILE_NAME) {
        return Ok(p);
    }
    let missing = |reason: String| LoftUpError::CheckpointMissing {
        source_name: source.to_string(),
        reason,
        hint: download_hint(source),
    };
    let cache = env.cache_dir().unwrap_or_default();
    let failed = |e: &dyn std::fmt::Display| {
        missing(format!(
            "not in the cache {} and the download failed ({e})",
            cache.display()
        ))
    };
    let api = env.download(source, false).map_err(|e| match e {
        segsweep_hub::HubError::Download(e) => failed(&e),
        other => missing(other.to_string()),
    })?;
    tracing::info!(
        repo = source,
        file = FILE_NAME,
        "downloading the LoftUp checkpoint"
    );
    api.get(FILE_NAME).map_err(|e| failed(&e))
}

/// Read every tensor of a `torch.save(state_dict)` file, by key, on the CPU.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>> {
    let tensors = candle_core::pickle::read_all(path).map_err(|e| LoftUpError::Read {
        path: path.to_path_buf(),
        cause: segsweep_core::without_backtrace(e),
    })?;
    if tensors.is_empty() {
        return Err(LoftUpError::Read {
            path: path.to_path_buf(),
            cause: candle_core::Error::Msg("no tensors found".into()),
        });
    }
    Ok(tensors.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline_env(home: &Path) -> HubEnv {
        HubEnv {
            home: Some(home.to_path_buf()),
            offline: true,
            endpoint: None,
        }
    }

    #[test]
    fn repo_ids_and_paths_are_told_apart() {
        assert!(is_repo_id("haiwen/loftup-clip"));
        assert!(!is_repo_id("/abs/pytorch_model.bin"));
        assert!(!is_repo_id("./x/y"));
        assert!(!is_repo_id("dir/pytorch_model.bin"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("loftup"));
    }

    #[test]
    fn missing_repo_offline_says_how_to_download() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve(DEFAULT_REPO, &offline_env(tmp.path())).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, LoftUpError::CheckpointMissing { .. }),
            "{msg}"
        );
        assert!(msg.contains("haiwen/loftup-clip"), "{msg}");
        assert!(
            msg.contains("huggingface-cli download haiwen/loftup-clip pytorch_model.bin"),
            "{msg}"
        );
        assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    }

    #[test]
    fn missing_path_and_empty_dir_say_how_to_download() {
        let tmp = tempfile::tempdir().unwrap();
        let env = offline_env(tmp.path());
        let missing = tmp.path().join("nope").join("pytorch_model.bin");
        let msg = resolve(missing.to_str().unwrap(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("haiwen/loftup-clip") && msg.contains("checkpoint ="),
            "{msg}"
        );
        let msg = resolve(tmp.path().to_str().unwrap(), &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("has no pytorch_model.bin"), "{msg}");
    }

    #[test]
    fn repo_id_is_found_in_the_cache_without_network() {
        // The hf-hub cache layout: hub/models--owner--name/{refs/main, snapshots/<rev>/file}.
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("hub").join("models--haiwen--loftup-clip");
        let snap = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123").unwrap();
        std::fs::write(snap.join(FILE_NAME), b"x").unwrap();
        let p = resolve(DEFAULT_REPO, &offline_env(tmp.path())).unwrap();
        assert_eq!(p, snap.join(FILE_NAME));
    }

    #[test]
    fn a_file_that_is_not_a_state_dict_is_a_read_error() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join(FILE_NAME);
        std::fs::write(&f, b"not a zip").unwrap();
        let msg = read_state_dict(&f).unwrap_err().to_string();
        assert!(msg.contains("cannot read as a PyTorch state dict"), "{msg}");
    }
}

//! The Hugging Face hub environment shared by every part of segsweep that fetches files by repo
//! id (the CLIP model in `segsweep-clip`, checkpoints in plugins such as LoftUp): where the
//! cache is, whether the network may be used, and a cache-first lookup.
//!
//! hf-hub does the cache layout (`<cache>/models--org--name/snapshots/<rev>/…`) and the
//! downloads; hf-hub 0.5 ignores `HF_HUB_OFFLINE` and its `Cache::default()` panics without a
//! home directory, so both are handled here. Callers turn [`HubError`] into their own errors
//! with their own hints (what to download, which parameter to set).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};

/// The environment that decides where the hub cache lives and whether downloads are allowed.
/// Read once with [`HubEnv::from_env`]; tests build it by hand instead of mutating the process
/// environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubEnv {
    /// `$HF_HOME`, else `$HOME/.cache/huggingface`; `None` when neither is set. The cache is
    /// `<home>/hub`.
    pub home: Option<PathBuf>,
    /// `$HF_HUB_OFFLINE` set to `1`/`true`/`yes`/`on`: never touch the network.
    pub offline: bool,
    /// `$HF_ENDPOINT`, for mirrors.
    pub endpoint: Option<String>,
}

/// Why a file could not be fetched.
#[derive(Debug)]
pub enum HubError {
    /// Neither `HF_HOME` nor `HOME` is set, so there is no cache to look in or download to.
    NoCache,
    /// Not in the cache and `HF_HUB_OFFLINE` forbids the download; `cache` is where it looked.
    Offline { cache: PathBuf },
    /// The download (or setting it up) failed.
    Download(hf_hub::api::sync::ApiError),
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::NoCache => {
                write!(
                    f,
                    "neither HF_HOME nor HOME is set, so there is no Hugging Face cache"
                )
            }
            HubError::Offline { cache } => write!(
                f,
                "not in the Hugging Face cache {} and HF_HUB_OFFLINE is set",
                cache.display()
            ),
            HubError::Download(e) => write!(f, "the download failed: {e}"),
        }
    }
}

impl std::error::Error for HubError {}

impl HubEnv {
    /// Read `HF_HOME`, `HOME`, `HF_HUB_OFFLINE` and `HF_ENDPOINT` (empty values count as unset).
    pub fn from_env() -> HubEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        HubEnv {
            home: var("HF_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache/huggingface"))),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            }),
            endpoint: var("HF_ENDPOINT"),
        }
    }

    /// The hub cache directory, `<home>/hub`.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join("hub"))
    }

    /// `file` of model repo `repo` in the cache (its snapshot path), without any network.
    pub fn cached(&self, repo: &str, file: &str) -> Option<PathBuf> {
        let cache = hf_hub::Cache::new(self.cache_dir()?);
        cache.model(repo.to_string()).get(file)
    }

    /// A download handle on model repo `repo` writing into the same cache (with a progress bar
    /// when `progress`). Refused when offline. Look in the cache with [`HubEnv::cached`] first:
    /// a handle always asks the network.
    pub fn download(&self, repo: &str, progress: bool) -> Result<ApiRepo, HubError> {
        let dir = self.cache_dir().ok_or(HubError::NoCache)?;
        if self.offline {
            return Err(HubError::Offline { cache: dir });
        }
        let mut builder = ApiBuilder::from_cache(hf_hub::Cache::new(dir)).with_progress(progress);
        if let Some(e) = &self.endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        Ok(builder
            .build()
            .map_err(HubError::Download)?
            .model(repo.to_string()))
    }
}

/// Whether `s` reads as a Hugging Face repo id `owner/name` (letters, digits, `-`, `_`, `.`;
/// no part empty or starting with `.`). A string that is also an existing path is for the
/// caller to decide.
pub fn looks_like_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        for id in [
            "openai/clip-vit-base-patch16",
            "haiwen/loftup-clip",
            "a_b/c.d-e",
        ] {
            assert!(looks_like_repo_id(id), "{id}");
        }
        for not in [
            "",
            "clip",
            "a/b/c",
            "./x",
            "../x",
            "a/.b",
            "/abs/path",
            "a b/c",
            "a/",
        ] {
            assert!(!looks_like_repo_id(not), "{not:?}");
        }
    }

    #[test]
    fn cache_first_and_offline_refusal() {
        let home = tempfile::tempdir().unwrap();
        let env = HubEnv {
            home: Some(home.path().to_path_buf()),
            offline: true,
            endpoint: None,
        };
        // hf-hub's layout: refs/main names the snapshot holding the file.
        let repo = home.path().join("hub/models--org--name");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        std::fs::write(repo.join("snapshots/abc123/model.bin"), b"w").unwrap();
        let hit = env.cached("org/name", "model.bin").unwrap();
        assert_eq!(hit, repo.join("snapshots/abc123/model.bin"));
        assert!(env.cached("org/name", "other.bin").is_none());
        assert!(env.cached("org/else", "model.bin").is_none());
        let err = env.download("org/name", false).unwrap_err();
        assert!(matches!(err, HubError::Offline { .. }));
        assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
        let none = HubEnv::default();
        assert!(none.cached("org/name", "model.bin").is_none());
        assert!(matches!(
            none.download("org/name", false),
            Err(HubError::NoCache)
        ));
    }
}

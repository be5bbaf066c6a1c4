//! CLIP's byte-level BPE tokenizer with OpenAI's vocabulary built into the binary
//! (`instant-clip-tokenizer`, which embeds `bpe_simple_vocab_16e6.txt`).
//!
//! Sequences are `<start_of_text> … <end_of_text>` and padded with 0, as OpenAI's
//! `clip.tokenize` does (transformers pads with 49407); the EOT position is the argmax of the ids
//! because 49407 is the largest id.
//!
//! A `tokenizer.json` in the model directory (Hugging Face `tokenizers` format) is used instead
//! when present, with its padding and truncation switched off (the text tower pads with 0 and
//! runs only to the longest prompt). Without one, `ClipModel::load` requires the OpenAI
//! vocabulary size. instant-clip-tokenizer lowercases but does not run ftfy / HTML unescaping;
//! class-name prompts are plain ASCII, so the ids agree with OpenAI's on them (tested on the
//! fixture prompts).

use crate::error::{ClipError, Result};

/// The id of `<start_of_text>`.
pub const SOT: u32 = 49406;
/// The id of `<end_of_text>`.
pub const EOT: u32 = 49407;
/// Vocabulary size of OpenAI's CLIP BPE.
pub const VOCAB_SIZE: usize = 49408;

enum Backend {
    Builtin(instant_clip_tokenizer::Tokenizer),
    Json(Box<tokenizers::Tokenizer>),
}

/// CLIP's tokenizer with a context length.
pub struct ClipTokenizer {
    inner: Backend,
    context: usize,
}

impl ClipTokenizer {
    /// The OpenAI vocabulary with a context of `context` tokens (77 for CLIP).
    pub fn new(context: usize) -> Self {
        ClipTokenizer {
            inner: Backend::Builtin(instant_clip_tokenizer::Tokenizer::new()),
            context,
        }
    }

    /// A Hugging Face `tokenizer.json`; its post-processor must add the start and end tokens
    /// (CLIP's does), and the end token must have the largest id of the sequence (pooling reads
    /// the argmax, as OpenAI's code does).
    pub fn from_json(path: &std::path::Path, context: usize) -> Result<Self> {
        let mut t = tokenizers::Tokenizer::from_file(path).map_err(|e| ClipError::Config {
            path: path.to_path_buf(),
            msg: format!("not a tokenizers JSON file: {e}"),
        })?;
        t.with_padding(None);
        t.with_truncation(None).map_err(|e| ClipError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(ClipTokenizer {
            inner: Backend::Json(Box::new(t)),
            context,
        })
    }

    /// Whether this is the built-in OpenAI vocabulary (not a `tokenizer.json`).
    pub fn is_builtin(&self) -> bool {
        matches!(self.inner, Backend::Builtin(_))
    }

    /// Context length (tokens incl. SOT and EOT).
    pub fn context(&self) -> usize {
        self.context
    }

    /// `<sot> tokens <eot>`, unpadded. Errors if longer than the context (OpenAI's
    /// `clip.tokenize` raises too; silently truncating would drop the EOT the pooling reads).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let toks: Vec<u32> = match &self.inner {
            Backend::Builtin(t) => {
                let mut toks = vec![t.start_of_text()];
                t.encode(text, &mut toks);
                toks.push(t.end_of_text());
                toks.into_iter().map(|t| t.to_u16() as u32).collect()
            }
            Backend::Json(t) => t
                .encode(text, true)
                .map_err(|e| ClipError::Prompt {
                    prompt: text.to_string(),
                    msg: e.to_string(),
                })?
                .get_ids()
                .to_vec(),
        };
        if toks.len() > self.context {
            return Err(ClipError::Prompt {
                prompt: text.to_string(),
                msg: format!(
                    "{} tokens is longer than the text context of {}",
                    toks.len(),
                    self.context
                ),
            });
        }
        Ok(toks)
    }

    /// Encode and zero-pad to `len` (≥ the longest sequence): `P × len` ids.
    pub fn encode_padded(&self, texts: &[&str], len: usize) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                let mut ids = self.encode(t)?;
                if ids.len() > len {
                    return Err(ClipError::Prompt {
                        prompt: t.to_string(),
                        msg: format!("{} tokens do not fit in {len}", ids.len()),
                    });
                }
                ids.resize(len, 0);
                Ok(ids)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_of_a_person_has_the_openai_ids() {
        let t = ClipTokenizer::new(77);
        assert_eq!(
            t.encode("a photo of a person.").unwrap(),
            vec![49406, 320, 1125, 539, 320, 2533, 269, 49407]
        );
    }

    #[test]
    fn tokenizer_json_is_honoured() {
        // A minimal word-level tokenizer.json with CLIP-like special tokens around the sequence.
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
          "normalizer": {"type": "Lowercase"},
          "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [8], "tokens": ["</s>"]}}},
          "decoder": null,
          "model": {"type": "WordLevel", "vocab": {"[unk]": 0, "a": 1, "photo": 2, "of": 3, "cat": 4, ".": 5, "<s>": 7, "</s>": 8}, "unk_token": "[unk]"}
        }"#;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, json).unwrap();
        let t = ClipTokenizer::from_json(&p, 77).unwrap();
        assert!(!t.is_builtin());
        assert_eq!(
            t.encode("A photo of a cat .").unwrap(),
            vec![7, 1, 2, 3, 1, 4, 5, 8]
        );
        std::fs::write(&p, "{").unwrap();
        let e = ClipTokenizer::from_json(&p, 77).err().unwrap().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
    }

    #[test]
    fn too_long_prompt_is_an_error_naming_it() {
        let t = ClipTokenizer::new(8);
        let e = t
            .encode("a photo of a small person.")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a photo of a small person."), "{e}");
    }
}

//! CLIP's byte-level BPE tokenizer with OpenAI's vocabulary built into the binary
//! (`instant-clip-tokenizer`, which embeds `bpe_simple_vocab_16e6.txt`).
//!
//! Sequences are `<start_of_text> … <end_of_text>` and padded with 0, as OpenAI's
//! `clip.tokenize` does (transformers pads with 49407); the EOT position is the argmax of the ids
//! because 49407 is the largest id.
//!
//! Deviation: a `tokenizer.json` in the model directory is not read; every checkpoint segsweep
//! targets (OpenAI ViT-B/16, B/32, L/14 and their HF conversions) uses this exact vocabulary,
//! and `ClipModel::load` rejects a config whose `vocab_size` differs. instant-clip-tokenizer
//! lowercases but does not run ftfy / HTML unescaping; class-name prompts are plain ASCII, so the
//! ids agree with OpenAI's on them (tested on the fixture prompts).

use crate::error::{ClipError, Result};

/// The id of `<start_of_text>`.
pub const SOT: u32 = 49406;
/// The id of `<end_of_text>`.
pub const EOT: u32 = 49407;
/// Vocabulary size of OpenAI's CLIP BPE.
pub const VOCAB_SIZE: usize = 49408;

/// CLIP's tokenizer with a context length.
pub struct ClipTokenizer {
    inner: instant_clip_tokenizer::Tokenizer,
    context: usize,
}

impl ClipTokenizer {
    /// The OpenAI vocabulary with a context of `context` tokens (77 for CLIP).
    pub fn new(context: usize) -> Self {
        ClipTokenizer {
            inner: instant_clip_tokenizer::Tokenizer::new(),
            context,
        }
    }

    /// Context length (tokens incl. SOT and EOT).
    pub fn context(&self) -> usize {
        self.context
    }

    /// `<sot> tokens <eot>`, unpadded. Errors if longer than the context (OpenAI's
    /// `clip.tokenize` raises too; silently truncating would drop the EOT the pooling reads).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut toks = vec![self.inner.start_of_text()];
        self.inner.encode(text, &mut toks);
        toks.push(self.inner.end_of_text());
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
        Ok(toks.into_iter().map(|t| t.to_u16() as u32).collect())
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
    fn too_long_prompt_is_an_error_naming_it() {
        let t = ClipTokenizer::new(8);
        let e = t
            .encode("a photo of a small person.")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a photo of a small person."), "{e}");
    }
}

//! Class-name files in SCLIP's format (`configs/cls_*.txt`).
//!
//! One class per line, in label-id order. A line may list synonyms separated by `", "` (comma
//! and one space); every synonym becomes its own text query, and a class's probability is the
//! max over its queries. Only the line break is removed: other whitespace is part of the name
//! (Context60's last line is `wood ` with a trailing space, and SCLIP prompts with it).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The classes of a dataset, each with one or more query names (synonyms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassNames {
    /// `classes[c]` = the query names of class `c`, first one = display name.
    pub classes: Vec<Vec<String>>,
}

impl ClassNames {
    /// Parse SCLIP's format. `source_name` only labels errors (a path or `builtin:voc21`).
    pub fn parse(text: &str, source_name: &str) -> Result<ClassNames> {
        let err = |msg: String| DataError::ClassNames {
            source_name: source_name.to_string(),
            msg,
        };
        // Python's readlines(): a final newline does not start another (empty) line.
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() {
            return Err(err("the file is empty".into()));
        }
        let mut classes = Vec::new();
        for (i, line) in body.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let names: Vec<String> = line.split(", ").map(str::to_string).collect();
            if names.iter().any(|n| n.trim().is_empty()) {
                return Err(err(format!(
                    "line {} (class {i}) has an empty name: {line:?}",
                    i + 1
                )));
            }
            classes.push(names);
        }
        Ok(ClassNames { classes })
    }

    /// Read and parse a class-name file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClassNames> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        ClassNames::parse(&text, &path.display().to_string())
    }

    /// Number of classes C.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// True when there is no class (never the case for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// One display name per class: its first synonym.
    pub fn display_names(&self) -> Vec<String> {
        self.classes.iter().map(|s| s[0].clone()).collect()
    }

    /// All queries in order, and for each its class index (SCLIP's `get_cls_idx`).
    pub fn queries(&self) -> (Vec<String>, Vec<usize>) {
        let mut q = Vec::new();
        let mut idx = Vec::new();
        for (c, names) in self.classes.iter().enumerate() {
            for n in names {
                q.push(n.clone());
                idx.push(c);
            }
        }
        (q, idx)
    }

    /// The class whose synonyms include `name` exactly.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.classes
            .iter()
            .position(|s| s.iter().any(|n| n == name))
    }

    /// Back to SCLIP's text format (no final newline).
    pub fn to_text(&self) -> String {
        self.classes
            .iter()
            .map(|s| s.join(", "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_trailing_space_and_final_newline() {
        let c = ClassNames::parse("sky, wall\nperson\nwood ", "t").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.classes[2], vec!["wood ".to_string()]);
        let (q, idx) = c.queries();
        assert_eq!(q, vec!["sky", "wall", "person", "wood "]);
        assert_eq!(idx, vec![0, 0, 1, 2]);
        let d = ClassNames::parse("a\nb\n", "t").unwrap();
        assert_eq!(d.len(), 2);
        // Only ", " splits: "trafficlight" and "a,b" are single names.
        let e = ClassNames::parse("a,b\nc, d", "t").unwrap();
        assert_eq!(e.classes[0], vec!["a,b".to_string()]);
        assert_eq!(e.find("d"), Some(1));
    }

    #[test]
    fn empty_file_and_blank_lines_are_errors_naming_the_source() {
        let e = ClassNames::parse("", "mine.txt").unwrap_err().to_string();
        assert!(e.contains("mine.txt"), "{e}");
        let e = ClassNames::parse("a\n\nb", "mine.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}

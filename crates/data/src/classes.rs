//! Class-name files in SCLIP's format (`configs/cls_*.txt`).
//!
//! One class per line, in label-id order. A line may list synonyms separated by `", "` (comma
//! and one space); every synonym becomes its own text query, and a class's probability is the
//! max over its queries. Only the line break is removed: other whitespace is part of the name
//! (Context60's last line is `wood ` with a trailing space, and SCLIP prompts with it).
//!
//! A class is displayed (tables, charts, `eval`) by its first synonym, except where a display
//! name is set: SCLIP's VOC21 and COCO-Object background line starts with `sky, wall, tree, …`
//! (the stuff it prompts for), but mmseg, and every script reading `per_class.csv`, calls the
//! class `background` ([`ClassNames::name_background`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// mmseg's name of the background class (`VOCDataset`, `COCOObjectDataset`,
/// `PascalContextDataset`).
pub const BACKGROUND: &str = "background";

/// The classes of a dataset, each with one or more query names (synonyms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassNames {
    /// `classes[c]` = the query names of class `c`; the first one is the display name unless
    /// `display` has one.
    pub classes: Vec<Vec<String>>,
    /// Display names that differ from the first synonym, by class id. They never change the
    /// queries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub display: BTreeMap<usize, String>,
}

/// SCLIP's class-name format, for hints.
const FORMAT: &str = "a class-name file has one line per class, in label-id order, its names separated by \", \" (e.g. `person, man, woman`), as SCLIP's files in crates/data/classnames/";

impl ClassNames {
    /// Parse SCLIP's format. `source_name` only labels errors (a path or `builtin:voc21`).
    pub fn parse(text: &str, source_name: &str) -> Result<ClassNames> {
        let err = |msg: String| DataError::ClassNames {
            source_name: source_name.to_string(),
            msg,
        };
        // A byte-order mark some editors write would become part of the first class name.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // Python's readlines(): a final newline does not start another (empty) line.
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.is_empty() {
            return Err(err(format!("the file is empty (hint: {FORMAT})")));
        }
        let mut classes = Vec::new();
        for (i, line) in body.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let names: Vec<String> = line.split(", ").map(str::to_string).collect();
            if names.iter().any(|n| n.trim().is_empty()) {
                return Err(err(format!(
                    "line {} (class {i}) has an empty name: {line:?} (hint: {FORMAT}; no blank lines)",
                    i + 1
                )));
            }
            // A repeated class name makes two rows of the tables indistinguishable, and a
            // repeated line is a class that could never be predicted (ties go to the first).
            // Compared as the text tower sees them: CLIP's tokenizer lower-cases, trims and
            // collapses whitespace, so `Person` and `person ` are `person`.
            let seen = |c: &Vec<String>| {
                prompt_key(&c[0]) == prompt_key(&names[0])
                    || (c.len() == names.len()
                        && c.iter()
                            .zip(&names)
                            .all(|(a, b)| prompt_key(a) == prompt_key(b)))
            };
            if let Some(j) = classes.iter().position(seen) {
                return Err(err(format!(
                    "line {} (class {i}, `{}`) repeats line {} (class {j}, `{}`) (hint: one line per class; put synonyms on one line, separated by \", \")",
                    i + 1,
                    names[0],
                    j + 1,
                    classes[j][0]
                )));
            }
            classes.push(names);
        }
        Ok(ClassNames {
            classes,
            display: BTreeMap::new(),
        })
    }

    /// Read and parse a class-name file; warns about [`ClassNames::shadowed`] classes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClassNames> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|cause| {
            let hint = if cause.kind() == std::io::ErrorKind::InvalidData {
                format!("not a text file: {FORMAT}")
            } else {
                "check the path given as the class-name file (`[dataset] classes` or `--classes`: as written, relative to the working directory; `[dataset.custom] classes`: relative to its root)".into()
            };
            DataError::Io {
                path: path.to_path_buf(),
                cause,
                hint: Some(hint),
            }
        })?;
        let names = ClassNames::parse(&text, &path.display().to_string())?;
        for (c, by) in names.shadowed() {
            tracing::warn!(
                "{}: class {c} (`{}`) can never be predicted: each of its names is also a name of class {by} (`{}`), and ties go to the first class",
                path.display(),
                names.classes[c][0],
                names.classes[by][0]
            );
        }
        Ok(names)
    }

    /// Classes that can never win the argmax, with the earlier class that shadows each: every
    /// one of their names is also a name of that class (its logit is then never lower, and
    /// ties go to the first class). SCLIP's own COCO-Object file has one: `bed` (class 60) is
    /// also on the background line.
    pub fn shadowed(&self) -> Vec<(usize, usize)> {
        (0..self.classes.len())
            .filter_map(|i| {
                (0..i)
                    .find(|&j| {
                        self.classes[i].iter().all(|n| {
                            self.classes[j]
                                .iter()
                                .any(|m| prompt_key(m) == prompt_key(n))
                        })
                    })
                    .map(|j| (i, j))
            })
            .collect()
    }

    /// Number of classes C.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// True when there is no class (never the case for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// One display name per class: the name set with [`ClassNames::name_background`], else
    /// its first synonym.
    pub fn display_names(&self) -> Vec<String> {
        self.classes
            .iter()
            .enumerate()
            .map(|(c, s)| self.display.get(&c).unwrap_or(&s[0]).clone())
            .collect()
    }

    /// Display class `class` as `background` (mmseg's name), keeping every synonym as a query.
    /// Does nothing for an id beyond the class list.
    pub fn name_background(&mut self, class: usize) {
        if class < self.classes.len() && self.classes[class][0] != BACKGROUND {
            self.display.insert(class, BACKGROUND.to_string());
        }
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

/// A class name as CLIP's text tower sees it: lower case, trimmed, whitespace collapsed (what
/// open_clip's `whitespace_clean(basic_clean(text)).lower()` does to plain ASCII names).
fn prompt_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_name() {
        let c = ClassNames::parse("\u{feff}background\nperson\n", "x.txt").unwrap();
        assert_eq!(c.classes[0], ["background"]);
    }

    #[test]
    fn a_repeated_class_is_an_error_naming_both_lines() {
        for text in [
            "background\nperson\nperson\n",
            "background\nperson, man\nperson, woman\n",
            "background\nman, person\nman, person\n",
            "background\nperson\nPerson\n",
            "background\nperson\nperson \n",
        ] {
            let e = ClassNames::parse(text, "dup.txt").unwrap_err().to_string();
            assert!(
                e.contains("dup.txt") && e.contains("line 3") && e.contains("line 2"),
                "{text:?}: {e}"
            );
        }
        // A synonym shared by two classes is allowed; a class whose names all belong to an
        // earlier one is reported as shadowed (a warning when read from a file).
        let c = ClassNames::parse("sofa, bed\ncouch, bed\nbed\n", "t").unwrap();
        assert_eq!(c.shadowed(), vec![(2, 0)]);
        // SCLIP's COCO-Object file: `bed` is also on the background line.
        let coco =
            ClassNames::parse(include_str!("../classnames/coco_object.txt"), "coco").unwrap();
        assert_eq!(coco.shadowed(), vec![(60, 0)]);
    }

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
    fn background_display_name_keeps_the_queries() {
        let mut c = ClassNames::parse("sky, wall\nperson", "t").unwrap();
        let queries = c.queries();
        c.name_background(0);
        assert_eq!(c.display_names(), vec!["background", "person"]);
        assert_eq!(c.queries(), queries);
        c.name_background(7); // beyond the list: ignored
        assert_eq!(c.display_names().len(), 2);
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

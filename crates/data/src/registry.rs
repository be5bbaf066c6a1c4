//! The eight standard benchmarks, in MMSegmentation's directory layouts.
//!
//! Paths, suffixes, `reduce_zero_label`, class files and SCLIP's per-dataset inference settings
//! follow SCLIP's `configs/cfg_*.py` and mmseg 1.x's dataset classes (see
//! `shared/research/frameworks.md` §4 and `methods.md` §0–§1). The class-name files are
//! byte-identical to SCLIP's `configs/cls_*.txt` and are embedded in the binary.

use std::path::{Path, PathBuf};

use segsweep_core::InferConfig;
use serde::{Deserialize, Serialize};

use crate::classes::ClassNames;
use crate::error::{DataError, Result};

/// SCLIP's per-dataset inference settings; field names match [`InferConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DatasetDefaults {
    /// Short side after mmcv `imrescale(scale=(2048, S))`.
    pub short_side: Option<usize>,
    /// Multiplier on cosine logits before the softmax.
    pub logit_scale: f32,
    /// Pixels whose max probability is below this become class 0.
    pub prob_thd: f32,
    /// Foreground classes with at most this share of foreground pixels are dropped.
    pub area_thd: Option<f32>,
}

impl DatasetDefaults {
    /// Write these settings into `cfg`, leaving mode, crop, stride, attention and batch alone.
    pub fn apply(&self, cfg: &mut InferConfig) {
        cfg.short_side = self.short_side;
        cfg.logit_scale = self.logit_scale;
        cfg.prob_thd = self.prob_thd;
        cfg.area_thd = self.area_thd;
    }

    /// [`InferConfig::default`] with these settings applied.
    pub fn infer_config(&self) -> InferConfig {
        let mut cfg = InferConfig::default();
        self.apply(&mut cfg);
        cfg
    }
}

/// How `segsweep data prepare` handles a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrepareKind {
    /// Used as released; `prepare` only verifies (and, with another root, copies) the layout.
    AsIs,
    /// COCO-Stuff `stuffthingmaps` (ids 0–181) → `*_labelTrainIds.png` (0–170).
    CocoStuff,
    /// COCO-Stuff `stuffthingmaps` → `*_instanceTrainIds.png` (0 = background, 1–80 things).
    CocoObject,
    /// Cityscapes `*_gtFine_labelIds.png` → `*_gtFine_labelTrainIds.png` (19 train ids).
    Cityscapes,
}

/// A registered benchmark: where its files are and how to score it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DatasetSpec {
    /// Registry name, e.g. `voc21`.
    pub name: &'static str,
    /// One line for listings.
    pub summary: &'static str,
    /// Default root relative to the data directory (mmseg's `data/` layout).
    pub default_root: &'static str,
    /// Image directory relative to the root.
    pub img_dir: &'static str,
    /// Label directory relative to the root.
    pub label_dir: &'static str,
    /// Split file relative to the root (one id per line); `None` = every image under `img_dir`.
    pub split_file: Option<&'static str>,
    pub img_suffix: &'static str,
    pub label_suffix: &'static str,
    pub ignore_index: u32,
    /// mmseg's `reduce_zero_label` (0 → 255, others − 1), applied at load.
    pub reduce_zero_label: bool,
    /// File name of the embedded class list (`crates/data/classnames/`).
    pub class_file: &'static str,
    /// Class-name text (SCLIP's format).
    #[serde(skip)]
    pub class_text: &'static str,
    pub n_classes: usize,
    /// Label id of the person class.
    pub person_class: usize,
    /// Label id of the explicit background class, where there is one (VOC21, Context60,
    /// COCO-Object): `prob_thd` and `area_thd` push pixels to it.
    pub background_class: Option<usize>,
    pub defaults: DatasetDefaults,
    /// Images in the validation split.
    pub val_size: usize,
    pub prepare: PrepareKind,
}

impl DatasetSpec {
    /// The parsed class names; the background class (if any) is displayed as `background`.
    pub fn classes(&self) -> ClassNames {
        // The embedded files are tested to parse; a failure here is a build-time mistake.
        let mut c = ClassNames::parse(self.class_text, &format!("builtin:{}", self.class_file))
            .unwrap_or_else(|e| panic!("embedded class file is malformed: {e}"));
        if let Some(b) = self.background_class {
            c.name_background(b);
        }
        c
    }

    /// Root under a data directory: `data_dir/<default_root>`.
    pub fn root_under(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.default_root)
    }
}

const fn defaults(short: usize, scale: f32, prob: f32, area: Option<f32>) -> DatasetDefaults {
    DatasetDefaults {
        short_side: Some(short),
        logit_scale: scale,
        prob_thd: prob,
        area_thd: area,
    }
}

const VOC: DatasetSpec = DatasetSpec {
    name: "voc21",
    summary: "PASCAL VOC 2012 val, 20 objects + background",
    default_root: "VOCdevkit/VOC2012",
    img_dir: "JPEGImages",
    label_dir: "SegmentationClass",
    split_file: Some("ImageSets/Segmentation/val.txt"),
    img_suffix: ".jpg",
    label_suffix: ".png",
    ignore_index: 255,
    reduce_zero_label: false,
    class_file: "voc21.txt",
    class_text: include_str!("../classnames/voc21.txt"),
    n_classes: 21,
    person_class: 15,
    background_class: Some(0),
    defaults: defaults(336, 65.0, 0.1, Some(0.1)),
    val_size: 1449,
    prepare: PrepareKind::AsIs,
};

const CONTEXT: DatasetSpec = DatasetSpec {
    name: "context60",
    summary: "PASCAL Context val, 59 classes + background",
    default_root: "VOCdevkit/VOC2010",
    img_dir: "JPEGImages",
    label_dir: "SegmentationClassContext",
    split_file: Some("ImageSets/SegmentationContext/val.txt"),
    img_suffix: ".jpg",
    label_suffix: ".png",
    ignore_index: 255,
    reduce_zero_label: false,
    class_file: "context60.txt",
    class_text: include_str!("../classnames/context60.txt"),
    n_classes: 60,
    person_class: 37,
    background_class: Some(0),
    defaults: defaults(336, 50.0, 0.1, None),
    val_size: 5105,
    prepare: PrepareKind::AsIs,
};

const COCO_STUFF: DatasetSpec = DatasetSpec {
    name: "coco-stuff164k",
    summary: "COCO-Stuff 164k val2017, 80 things + 91 stuff",
    default_root: "coco_stuff164k",
    img_dir: "images/val2017",
    label_dir: "annotations/val2017",
    split_file: None,
    img_suffix: ".jpg",
    label_suffix: "_labelTrainIds.png",
    ignore_index: 255,
    reduce_zero_label: false,
    class_file: "coco_stuff.txt",
    class_text: include_str!("../classnames/coco_stuff.txt"),
    n_classes: 171,
    person_class: 0,
    background_class: None,
    defaults: defaults(448, 40.0, 0.0, None),
    val_size: 5000,
    prepare: PrepareKind::CocoStuff,
};

/// Every registered dataset, in the order of the literature's tables.
pub const DATASETS: &[DatasetSpec] = &[
    VOC,
    CONTEXT,
    DatasetSpec {
        name: "coco-object",
        summary: "COCO-Object val2017 (from COCO-Stuff), 80 things + background",
        label_suffix: "_instanceTrainIds.png",
        class_file: "coco_object.txt",
        class_text: include_str!("../classnames/coco_object.txt"),
        n_classes: 81,
        person_class: 1,
        background_class: Some(0),
        defaults: defaults(336, 50.0, 0.1, None),
        prepare: PrepareKind::CocoObject,
        ..COCO_STUFF
    },
    DatasetSpec {
        name: "voc20",
        summary: "PASCAL VOC 2012 val, 20 objects, background ignored",
        reduce_zero_label: true,
        class_file: "voc20.txt",
        class_text: include_str!("../classnames/voc20.txt"),
        n_classes: 20,
        person_class: 14,
        background_class: None,
        defaults: defaults(336, 40.0, 0.0, None),
        ..VOC
    },
    DatasetSpec {
        name: "context59",
        summary: "PASCAL Context val, 59 classes, background ignored",
        reduce_zero_label: true,
        class_file: "context59.txt",
        class_text: include_str!("../classnames/context59.txt"),
        n_classes: 59,
        person_class: 36,
        background_class: None,
        defaults: defaults(336, 40.0, 0.0, None),
        ..CONTEXT
    },
    COCO_STUFF,
    DatasetSpec {
        name: "cityscapes",
        summary: "Cityscapes val, 19 train ids",
        default_root: "cityscapes",
        img_dir: "leftImg8bit/val",
        label_dir: "gtFine/val",
        split_file: None,
        img_suffix: "_leftImg8bit.png",
        label_suffix: "_gtFine_labelTrainIds.png",
        ignore_index: 255,
        reduce_zero_label: false,
        class_file: "cityscapes.txt",
        class_text: include_str!("../classnames/cityscapes.txt"),
        n_classes: 19,
        person_class: 11,
        background_class: None,
        defaults: defaults(560, 40.0, 0.0, None),
        val_size: 500,
        prepare: PrepareKind::Cityscapes,
    },
    DatasetSpec {
        name: "ade20k",
        summary: "ADE20K (SceneParsing ADEChallengeData2016) val, 150 classes",
        default_root: "ade/ADEChallengeData2016",
        img_dir: "images/validation",
        label_dir: "annotations/validation",
        split_file: None,
        img_suffix: ".jpg",
        label_suffix: ".png",
        ignore_index: 255,
        reduce_zero_label: true,
        class_file: "ade20k.txt",
        class_text: include_str!("../classnames/ade20k.txt"),
        n_classes: 150,
        person_class: 12,
        background_class: None,
        defaults: defaults(336, 40.0, 0.0, None),
        val_size: 2000,
        prepare: PrepareKind::AsIs,
    },
];

/// The class-name file of the synthetic dataset.
pub const SYNTHETIC_CLASSES: &str = include_str!("../classnames/synthetic.txt");

/// Look a dataset up by name (`coco_stuff164k` and `coco-stuff164k` are the same; `coco-stuff`
/// is an alias of `coco-stuff164k`).
pub fn dataset_spec(name: &str) -> Result<&'static DatasetSpec> {
    let norm = name.trim().to_ascii_lowercase().replace('_', "-");
    let norm = match norm.as_str() {
        "coco-stuff" => "coco-stuff164k",
        "city-scapes" => "cityscapes",
        other => other,
    };
    DATASETS
        .iter()
        .find(|d| d.name == norm)
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_string(),
            known: DATASETS.iter().map(|d| d.name.to_string()).collect(),
        })
}

/// Registered names, in table order (plus `synthetic`, which needs no files).
pub fn dataset_names() -> Vec<String> {
    DATASETS
        .iter()
        .map(|d| d.name.to_string())
        .chain(std::iter::once("synthetic".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_files_parse_with_the_documented_counts_and_person_ids() {
        // (name, classes, queries, person display name)
        let want = [
            ("voc21", 21, 56, "person"),
            ("voc20", 20, 30, "person"),
            ("context60", 60, 60, "person"),
            ("context59", 59, 59, "person"),
            ("coco-stuff164k", 171, 171, "person"),
            ("coco-object", 81, 113, "person"),
            ("ade20k", 150, 150, "person"),
            ("cityscapes", 19, 19, "person"),
        ];
        for (name, n, q, person) in want {
            let d = dataset_spec(name).unwrap();
            let c = d.classes();
            assert_eq!(c.len(), n, "{name}");
            assert_eq!(d.n_classes, n, "{name}");
            assert_eq!(c.queries().0.len(), q, "{name}");
            assert_eq!(c.display_names()[d.person_class], person, "{name}");
        }
        assert_eq!(DATASETS.len(), 8);
    }

    /// Contracts review #8: SCLIP's background line starts with `sky`; the class is displayed
    /// as mmseg's `background`, and the prompts keep every synonym.
    #[test]
    fn contracts_8_background_is_displayed_as_background_with_every_synonym_kept() {
        for name in ["voc21", "coco-object", "context60"] {
            let d = dataset_spec(name).unwrap();
            let c = d.classes();
            assert_eq!(c.display_names()[0], "background", "{name}");
            let raw = ClassNames::parse(d.class_text, name).unwrap();
            assert_eq!(c.queries(), raw.queries(), "{name}");
            assert_eq!(c.classes, raw.classes, "{name}");
        }
        let voc = dataset_spec("voc21").unwrap().classes();
        assert_eq!(voc.classes[0][0], "sky");
        assert_eq!(voc.classes[0].len(), 26);
        // Datasets without a background class keep their first synonyms.
        let ade = dataset_spec("ade20k").unwrap().classes();
        assert_eq!(ade.display_names()[0], ade.classes[0][0]);
        assert!(ade.display.is_empty());
    }

    #[test]
    fn sclip_specifics_of_the_class_files() {
        let v = dataset_spec("voc21").unwrap().classes();
        assert_eq!(v.classes[0].len(), 26);
        assert_eq!(v.classes[15].len(), 7);
        assert_eq!(v.classes[4], vec!["ship"]);
        assert_eq!(v.classes[20][0], "television monitor");
        let c60 = dataset_spec("context60").unwrap();
        assert!(c60.class_text.ends_with("\nwood "));
        assert_eq!(c60.classes().classes[0], vec!["background"]);
        let o = dataset_spec("coco-object").unwrap().classes();
        assert_eq!(o.classes[1].len(), 8);
        assert_eq!(o.classes[1][7], "body");
        let city = dataset_spec("cityscapes").unwrap().classes();
        assert_eq!(city.find("trafficlight"), Some(6));
        assert_eq!(city.find("trafficsign"), Some(7));
        let s = ClassNames::parse(SYNTHETIC_CLASSES, "synthetic").unwrap();
        assert_eq!(s.find("person"), Some(1));
    }

    #[test]
    fn defaults_and_sizes_follow_sclip() {
        let d = dataset_spec("voc21").unwrap();
        let cfg = d.defaults.infer_config();
        assert_eq!(
            (cfg.short_side, cfg.logit_scale, cfg.prob_thd, cfg.area_thd),
            (Some(336), 65.0, 0.1, Some(0.1))
        );
        assert_eq!(
            dataset_spec("coco_stuff164k").unwrap().defaults.short_side,
            Some(448)
        );
        assert_eq!(
            dataset_spec("cityscapes").unwrap().defaults.short_side,
            Some(560)
        );
        let sizes: Vec<usize> = [
            "voc21",
            "voc20",
            "context60",
            "context59",
            "coco-stuff164k",
            "coco-object",
            "ade20k",
            "cityscapes",
        ]
        .iter()
        .map(|n| dataset_spec(n).unwrap().val_size)
        .collect();
        assert_eq!(sizes, vec![1449, 1449, 5105, 5105, 5000, 5000, 2000, 500]);
        let e = dataset_spec("voc2012").unwrap_err().to_string();
        assert!(e.contains("voc21") && e.contains("cityscapes"), "{e}");
    }
}

//! Runner tests on the built-in tiny random CLIP and synthetic data (numbers are synthetic).

use std::path::Path;

use segsweep_runner::{expand, load_text, run, RunOptions};

// The binary names every plugin crate; a test of the runner must too (inventory issue #50).
use segsweep_plugin_cliptrase as _;
use segsweep_plugin_pamr as _;

const SPEC: &str = r#"
[experiment]
name = "t"
[model]
source = "builtin:tiny-random"
[dataset]
name = "synthetic"
synthetic_images = 2
short_side = 224
[[pipeline]]
plugin = "cliptrase"
[[pipeline]]
plugin = "pamr"
steps = 1
[sweep.grid]
"cliptrase.correlation_temperature" = [0.05, 0.5]
[sweep.zip]
"inference.prob_thd" = [0.0, 0.3]
"inference.logit_scale" = [40.0, 60.0]
[[sweep.variants]]
name = "baseline"
pipeline = []
[[sweep.variants]]
name = "both"
"#;

fn experiment(out: &Path) -> segsweep_runner::Experiment {
    let text = SPEC.replacen(
        "name = \"t\"",
        &format!("name = \"t\"\noutput_dir = \"{}\"", out.display()),
        1,
    );
    expand(load_text(Path::new("t.toml"), text, &[]).unwrap(), &[]).unwrap()
}

#[test]
fn expansion_is_deterministic_and_collapses_inapplicable_grid_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let a = experiment(tmp.path());
    let b = experiment(tmp.path());
    let ha: Vec<&str> = a.configs.iter().map(|c| c.hash.as_str()).collect();
    let hb: Vec<&str> = b.configs.iter().map(|c| c.hash.as_str()).collect();
    assert_eq!(ha, hb);
    // baseline: 2 zip rows (the cliptrase grid does not apply); both: 2 temperatures × 2 rows.
    assert_eq!(a.configs.len(), 2 + 4);
    let labels: Vec<String> = a.configs.iter().map(|c| c.label()).collect();
    assert!(
        labels[0].starts_with("baseline") && !labels[0].contains("correlation_temperature"),
        "{labels:?}"
    );
    assert_eq!(a.configs[2].inference.prob_thd, 0.0);
    assert_eq!(a.configs[3].inference.prob_thd, 0.3);
    assert_eq!(a.configs[3].inference.logit_scale, 60.0);
}

#[test]
fn sharing_the_backbone_prefix_gives_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let shared = run(
        &exp,
        &RunOptions {
            run_id: Some("shared".into()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let alone = run(
        &exp,
        &RunOptions {
            run_id: Some("alone".into()),
            share_prefix: false,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(shared.records.len(), 6);
    for (a, b) in shared.records.iter().zip(&alone.records) {
        assert_eq!(a.config_hash, b.config_hash);
        assert_eq!(a.counts, b.counts, "config {} differs", a.label());
    }
    // The configurations really differ from each other (the test would be vacuous otherwise).
    let distinct: std::collections::BTreeSet<String> = shared
        .records
        .iter()
        .map(|r| format!("{:?}", r.counts))
        .collect();
    assert!(
        distinct.len() >= 3,
        "only {} distinct results",
        distinct.len()
    );
}

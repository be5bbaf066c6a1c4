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

/// `a` and `b` side by side, after checking they have the same, non-zero length: a bare `zip`
/// stops at the shorter one, so an empty or truncated run would pass every comparison.
#[track_caller]
fn paired<'a, T>(
    a: &'a [T],
    b: &'a [T],
) -> std::iter::Zip<std::slice::Iter<'a, T>, std::slice::Iter<'a, T>> {
    assert_eq!(a.len(), b.len(), "lengths differ");
    assert!(!a.is_empty(), "nothing to compare");
    a.iter().zip(b)
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
            // Computed again, not copied from the `shared` run's records.
            reuse: false,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(shared.records.len(), 6);
    assert_eq!((alone.ran, alone.reused), (6, 0), "computed, not reused");
    for (a, b) in paired(&shared.records, &alone.records) {
        assert_eq!(a.config_hash, b.config_hash);
        assert_eq!(a.counts, b.counts, "config {} differs", a.label());
    }
    // The configurations really differ from each other (the test would be vacuous otherwise).
    assert_distinct(&shared.records, 3);
}

/// At least `n` of `records` have different counts (a comparison of identical results would
/// prove nothing).
#[track_caller]
fn assert_distinct(records: &[segsweep_report::Record], n: usize) {
    let distinct: std::collections::BTreeSet<String> =
        records.iter().map(|r| format!("{:?}", r.counts)).collect();
    assert!(
        distinct.len() >= n,
        "only {} distinct results",
        distinct.len()
    );
}

/// Configurations that differ only in their thresholds share one image's class probabilities
/// (softmax and dense-stage plugins computed once per logit scale and dense plugin): with PAMR
/// on and off, 2 logit scales and 2 × 2 thresholds (16 configurations, 4 sets of
/// probabilities per image), every record equals the configuration run alone.
#[test]
fn configurations_sharing_class_probabilities_give_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[experiment]
name = "probs"
output_dir = "{}"
[model]
source = "builtin:tiny-random"
[dataset]
name = "synthetic"
synthetic_images = 2
short_side = 224
[[pipeline]]
plugin = "pamr"
steps = 1
[[sweep.variants]]
name = "baseline"
pipeline = []
[[sweep.variants]]
name = "pamr"
[sweep.grid]
"inference.logit_scale" = [40.0, 60.0]
"inference.prob_thd" = [0.0, 0.4]
"inference.area_thd" = [0.0, 0.3]
"#,
        tmp.path().display()
    );
    let exp = expand(load_text(Path::new("p.toml"), text, &[]).unwrap(), &[]).unwrap();
    let go = |id: &str, share: bool| {
        run(
            &exp,
            &RunOptions {
                run_id: Some(id.into()),
                share_prefix: share,
                reuse: false,
                ..RunOptions::default()
            },
        )
        .unwrap()
    };
    let (shared, alone) = (go("shared", true), go("alone", false));
    assert_eq!(shared.records.len(), 16);
    for (a, b) in paired(&shared.records, &alone.records) {
        assert_eq!(a.counts, b.counts, "config {} differs", a.label());
    }
    assert_distinct(&shared.records, 8);
}

/// Runs `exp` under `run_id` with `[experiment]` memory settings replaced.
fn run_with(
    exp: &segsweep_runner::Experiment,
    run_id: &str,
    budget_mb: u64,
    spill: segsweep_runner::Spill,
) -> segsweep_runner::RunSummary {
    run_mem(exp, run_id, budget_mb, spill, segsweep_runner::Spill::None)
}

/// Runs `exp` under `run_id` with the budget (MiB), spill and feature cache replaced.
fn run_mem(
    exp: &segsweep_runner::Experiment,
    run_id: &str,
    budget_mb: u64,
    spill: segsweep_runner::Spill,
    cache: segsweep_runner::Spill,
) -> segsweep_runner::RunSummary {
    let mut exp = exp.clone();
    exp.memory.budget_bytes = budget_mb << 20;
    exp.memory.spill = spill;
    exp.memory.feature_cache = cache;
    run(
        &exp,
        &RunOptions {
            run_id: Some(run_id.into()),
            // Each run computes (the memory settings are not in the hash, so the records of
            // an earlier run would otherwise be reused).
            reuse: false,
            ..RunOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn issue_7_tiny_budget_drops_and_recomputes_the_prefix_with_identical_results() {
    use segsweep_runner::Spill;
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let roomy = run_with(&exp, "roomy", 1024, Spill::None);
    let tiny = run_with(&exp, "tiny", 0, Spill::None);
    // 3 upstream keys (baseline, two cliptrase temperatures) on each of 2 images: the prefix is
    // needed again twice per image.
    assert_eq!(roomy.memory.prefix_recomputes, 0);
    assert_eq!(tiny.memory.prefix_recomputes, 4);
    assert_eq!(tiny.memory.prefix_spills, 0);
    assert_eq!(tiny.memory.images, 2);
    assert_eq!(tiny.memory.images_over_budget, 2);
    // Roomy: the baseline's dense logits of both images ran together, so both prefixes and
    // both maps were held at once. Tiny: nothing beyond one image's prefix and map.
    assert_eq!(roomy.memory.dense_batched_images, 2);
    assert!(
        roomy.memory.peak_held_bytes
            > roomy.memory.peak_prefix_bytes + roomy.memory.peak_dense_bytes
    );
    assert!(
        roomy.memory.peak_held_bytes
            <= 2 * (roomy.memory.peak_prefix_bytes + roomy.memory.peak_dense_bytes)
    );
    assert_eq!(tiny.memory.dense_batched_images, 0);
    assert_eq!(
        tiny.memory.peak_held_bytes,
        tiny.memory.peak_prefix_bytes + tiny.memory.peak_dense_bytes
    );
    for (a, b) in paired(&roomy.records, &tiny.records) {
        assert_eq!(a.counts, b.counts, "config {} differs", a.label());
    }
    let saved: segsweep_runner::MemoryStats =
        serde_json::from_str(&std::fs::read_to_string(tiny.run_dir.join("memory.json")).unwrap())
            .unwrap();
    assert_eq!(saved, tiny.memory);
}

#[test]
fn issue_7_f32_spill_gives_identical_results_and_leaves_no_scratch_files() {
    use segsweep_runner::Spill;
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let roomy = run_with(&exp, "roomy", 1024, Spill::None);
    let spilled = run_with(&exp, "spilled", 0, Spill::F32);
    assert_eq!(spilled.memory.prefix_spills, 4);
    assert_eq!(spilled.memory.prefix_reloads, 4);
    assert_eq!(spilled.memory.prefix_recomputes, 0);
    // f32 on disk: the bytes written are the prefix bytes held, plus an 8-byte (gh, gw) grid.
    assert_eq!(
        spilled.memory.spilled_bytes,
        4 * (spilled.memory.peak_prefix_bytes + 8)
    );
    for (a, b) in paired(&roomy.records, &spilled.records) {
        assert_eq!(a.counts, b.counts, "config {} differs", a.label());
        assert_eq!(b.f16_prefix_images, 0);
    }
    assert!(!spilled.run_dir.join("cache").exists());
}

#[test]
fn issue_7_f16_spill_gives_close_results() {
    use segsweep_runner::Spill;
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let roomy = run_with(&exp, "roomy", 1024, Spill::None);
    let half = run_with(&exp, "half", 0, Spill::F16);
    assert_eq!(half.memory.prefix_spills, 4);
    // Each record says how many of its images ran on a prefix read back from f16: none for the
    // configurations of the first upstream key (the prefix as computed), both images for the
    // later ones (2 images × 2 reloads = the 4 spills); f32 spill and no spill round nothing.
    let rounded: Vec<usize> = half.records.iter().map(|r| r.f16_prefix_images).collect();
    assert!(rounded.iter().all(|&n| n == 0 || n == 2), "{rounded:?}");
    assert!(rounded.contains(&0) && rounded.contains(&2), "{rounded:?}");
    assert!(roomy.records.iter().all(|r| r.f16_prefix_images == 0));
    // Half the bytes of f32 (the (gh, gw) grids stay u32).
    assert!(half.memory.spilled_bytes < 4 * half.memory.peak_prefix_bytes * 51 / 100);
    for (a, b) in paired(&roomy.records, &half.records) {
        let (ca, cb) = (&a.counts, &b.counts);
        assert_eq!(ca.label, cb.label);
        // Pixels predicted per class move by at most 1 % of the labelled pixels.
        let pixels: u64 = ca.label.iter().sum();
        let moved: u64 = paired(&ca.pred, &cb.pred)
            .map(|(x, y)| x.abs_diff(*y))
            .sum();
        assert!(
            moved * 100 <= pixels,
            "config {}: {moved} of {pixels} pixels moved",
            a.label()
        );
        let (ma, mb) = (a.metrics.aacc_pct.unwrap(), b.metrics.aacc_pct.unwrap());
        assert!(
            (ma - mb).abs() <= 1.0,
            "config {}: aAcc {ma} vs {mb}",
            a.label()
        );
    }
}

#[test]
fn issue_7_bad_memory_settings_name_the_key() {
    let cases = [
        ("memory_budget_mb = -1", "experiment.memory_budget_mb"),
        ("memory_budget_mb = \"lots\"", "experiment.memory_budget_mb"),
        (
            "memory_budget_mb = 99999999999",
            "experiment.memory_budget_mb",
        ),
        ("spill = \"f8\"", "experiment.spill"),
        ("spill = 16", "experiment.spill"),
        ("spill_dir = \"\"", "experiment.spill_dir"),
        ("feature_cache = \"yes\"", "experiment.feature_cache"),
        ("feature_cache = true", "experiment.feature_cache"),
        ("feature_cache_dir = \"\"", "experiment.feature_cache_dir"),
        ("load_ahead = -1", "experiment.load_ahead"),
        ("load_ahead = 100000", "experiment.load_ahead"),
        ("load_ahead = \"auto\"", "experiment.load_ahead"),
    ];
    for (line, key) in cases {
        let text = SPEC.replacen("name = \"t\"", &format!("name = \"t\"\n{line}"), 1);
        let err = load_text(Path::new("t.toml"), text, &[])
            .and_then(|spec| expand(spec, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "`{line}` gave: {err}");
    }
}

/// Runs `exp` under `run_id` with the feature cache set (and a memory budget in MiB).
fn run_cached(
    exp: &segsweep_runner::Experiment,
    run_id: &str,
    cache: segsweep_runner::Spill,
    budget_mb: u64,
) -> segsweep_runner::RunSummary {
    run_mem(exp, run_id, budget_mb, segsweep_runner::Spill::None, cache)
}

fn cache_entries(out: &Path) -> Vec<std::path::PathBuf> {
    let dir = out.join(".cache/features");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn issue_7_f32_feature_cache_is_reused_by_later_runs_with_identical_results() {
    use segsweep_runner::Spill;
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let plain = run_with(&exp, "plain", 1024, Spill::None);
    assert_eq!(plain.memory.feature_cache_writes, 0);
    assert!(cache_entries(tmp.path()).is_empty());

    // First cached run: computes each image's prefix once and writes it.
    let first = run_cached(&exp, "first", Spill::F32, 1024);
    assert_eq!(
        (
            first.memory.feature_cache_hits,
            first.memory.feature_cache_writes
        ),
        (0, 2)
    );
    let entries = cache_entries(tmp.path());
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries
        .iter()
        .all(|p| p.extension().unwrap() == "safetensors"));
    // f32 entries hold the prefix bytes plus one 8-byte (gh, gw) grid per chunk.
    assert!(first.memory.feature_cache_bytes >= 2 * first.memory.peak_prefix_bytes);

    // A later run (new run id, as after adding configurations) reads every prefix, and a zero
    // budget reads it again from the cache instead of recomputing it.
    let second = run_cached(&exp, "second", Spill::F32, 0);
    assert_eq!(second.memory.feature_cache_writes, 0);
    assert_eq!(second.memory.prefix_recomputes, 0);
    // 2 images, each read once up front and again for the 2 later upstream keys.
    assert_eq!(second.memory.feature_cache_hits, 6);
    for r in [&first, &second] {
        for (a, b) in paired(&plain.records, &r.records) {
            assert_eq!(a.config_hash, b.config_hash);
            assert_eq!(a.counts, b.counts, "config {} differs", a.label());
        }
    }
    let saved: segsweep_runner::MemoryStats =
        serde_json::from_str(&std::fs::read_to_string(second.run_dir.join("memory.json")).unwrap())
            .unwrap();
    assert_eq!(saved.feature_cache, "f32");
    assert_eq!(saved.feature_cache_hits, 6);

    // An f16 cache is a different entry (the stored dtype is in the key).
    let half = run_cached(&exp, "half", Spill::F16, 1024);
    assert_eq!(half.memory.feature_cache_writes, 2);
    assert_eq!(cache_entries(tmp.path()).len(), 4);
    assert!(half.memory.feature_cache_bytes < first.memory.feature_cache_bytes * 51 / 100);
    // Written, not read: the prefixes were computed. A later run reads both images' prefixes
    // from f16, and every record says so (the f32 cache's never do).
    assert!(half.records.iter().all(|r| r.f16_prefix_images == 0));
    let half_read = run_cached(&exp, "half-read", Spill::F16, 1024);
    assert_eq!(half_read.memory.feature_cache_hits, 2);
    assert!(half_read.records.iter().all(|r| r.f16_prefix_images == 2));
    assert!(second.records.iter().all(|r| r.f16_prefix_images == 0));
    // Read from the f16 cache, then spilled in f32 between upstream keys (budget 0): the exact
    // round trip keeps the f16 rounding, and every configuration still counts both images.
    let cache_spill = run_mem(&exp, "cache-spill", 0, Spill::F32, Spill::F16);
    assert!(cache_spill.memory.prefix_spills > 0);
    assert!(
        cache_spill.records.iter().all(|r| r.f16_prefix_images == 2),
        "{:?}",
        cache_spill
            .records
            .iter()
            .map(|r| r.f16_prefix_images)
            .collect::<Vec<_>>()
    );

    // Reuse across runs: a run that keeps prefixes exact does not take records computed on
    // f16 ones; it takes exact ones. Only "half-read" has f16 records; move the exact ones away.
    for id in ["plain", "first", "second", "half"] {
        let d = half_read.run_dir.parent().unwrap().join(id);
        std::fs::rename(&d, tmp.path().join(format!("aside-{id}"))).unwrap();
    }
    let exact = run(
        &exp,
        &RunOptions {
            run_id: Some("exact".into()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(exact.reused, 0, "f16 records reused by an exact run");
    assert!(exact.records.iter().all(|r| r.f16_prefix_images == 0));
    for (a, b) in paired(&plain.records, &exact.records) {
        assert_eq!(a.counts, b.counts, "config {} differs", a.label());
    }
    // A run that may itself store f16 prefixes takes them.
    let mut f16 = exp.clone();
    f16.memory.feature_cache = Spill::F16;
    let took = run(
        &f16,
        &RunOptions {
            run_id: Some("f16-again".into()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert!(took.reused > 0);
}

#[test]
fn issue_7_unreadable_feature_cache_entry_is_recomputed_with_a_warning() {
    use segsweep_runner::Spill;
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let first = run_cached(&exp, "first", Spill::F32, 1024);
    let entries = cache_entries(tmp.path());
    assert_eq!(entries.len(), 2);
    // Truncate one entry, as a full disk or a killed copy would.
    let bytes = std::fs::read(&entries[0]).unwrap();
    std::fs::write(&entries[0], &bytes[..bytes.len() / 2]).unwrap();
    let second = run_cached(&exp, "second", Spill::F32, 1024);
    assert_eq!(second.memory.feature_cache_unreadable, 1);
    assert_eq!(second.memory.feature_cache_hits, 1);
    assert_eq!(second.memory.feature_cache_writes, 1);
    for (a, b) in paired(&first.records, &second.records) {
        assert_eq!(a.counts, b.counts, "config {} differs", a.label());
    }
    // Rewritten whole: the next run reads both.
    let third = run_cached(&exp, "third", Spill::F32, 1024);
    assert_eq!(
        (
            third.memory.feature_cache_hits,
            third.memory.feature_cache_unreadable
        ),
        (2, 0)
    );
}

#[test]
fn issue_7_crops_batched_across_images_give_identical_results() {
    // 5 synthetic images of 2 windows each (short side 224, non-square): batch_size 1 runs each
    // crop alone, 4 fills batches with two images, 64 takes all 5 images in one batch.
    let tmp = tempfile::tempdir().unwrap();
    let spec = |batch: usize| {
        let text = format!(
            r#"
[experiment]
name = "b"
output_dir = "{}"
[model]
source = "builtin:tiny-random"
[dataset]
name = "synthetic"
synthetic_images = 5
short_side = 224
[inference]
batch_size = {batch}
[sweep.grid]
"inference.prob_thd" = [0.0, 0.3]
"#,
            tmp.path().display()
        );
        expand(load_text(Path::new("b.toml"), text, &[]).unwrap(), &[]).unwrap()
    };
    let runs: Vec<_> = [1, 4, 64]
        .into_iter()
        .map(|b| {
            let r = run(
                &spec(b),
                &RunOptions {
                    run_id: Some(format!("batch{b}")),
                    ..RunOptions::default()
                },
            )
            .unwrap();
            (b, r)
        })
        .collect();
    let batches: Vec<usize> = runs.iter().map(|(_, r)| r.memory.image_batches).collect();
    assert_eq!(batches, [5, 3, 1], "image batches for batch sizes 1, 4, 64");
    // Without plugins the last block ran on the crops of each image batch together: none at
    // batch 1, the 2 + 2 images of the two full batches of 4, all 5 at 64.
    let together: Vec<usize> = runs
        .iter()
        .map(|(_, r)| r.memory.dense_batched_images)
        .collect();
    assert_eq!(
        together,
        [0, 4, 5],
        "images whose dense logits ran together"
    );
    for (b, r) in &runs[1..] {
        assert_eq!(r.memory.images, 5);
        for (x, y) in paired(&runs[0].1.records, &r.records) {
            assert_eq!(x.counts, y.counts, "batch {b}: {} differs", y.label());
        }
    }
}

/// The next image batch's prefixes computed on a second thread (`RunOptions::pipeline`, on by
/// default on a GPU) change nothing: on 7 images of 2 windows in batches of 4 crops (4 image
/// batches), with and without a feature-stage plugin, the pipelined run's records and memory
/// counters equal one batch after the other; and a pipelined run stopped after 3 images then
/// resumed ends with the same records.
/// 7 synthetic images in batches of 4 crops; a baseline and a cliptrase variant (two upstream
/// keys, so each image's prefix is needed twice), each at two `prob_thd`.
fn pipelined_spec(out: &Path, name: &str) -> segsweep_runner::Experiment {
    let text = format!(
        r#"
[experiment]
name = "{name}"
output_dir = "{}"
[model]
source = "builtin:tiny-random"
[dataset]
name = "synthetic"
synthetic_images = 7
short_side = 224
[inference]
batch_size = 4
[[pipeline]]
plugin = "cliptrase"
[[sweep.variants]]
name = "baseline"
pipeline = []
[[sweep.variants]]
name = "trase"
[sweep.grid]
"inference.prob_thd" = [0.0, 0.3]
"#,
        out.display()
    );
    expand(load_text(Path::new("p.toml"), text, &[]).unwrap(), &[]).unwrap()
}

#[test]
fn issue_7_the_pipelined_runner_gives_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = |name: &str| pipelined_spec(tmp.path(), name);
    let go = |name: &str, pipeline: bool, stop: Option<usize>| {
        run(
            &spec(name),
            &RunOptions {
                run_id: Some(name.into()),
                pipeline: Some(pipeline),
                stop_after_images: stop,
                reuse: false,
                ..RunOptions::default()
            },
        )
    };
    let serial = go("serial", false, None).unwrap();
    let piped = go("piped", true, None).unwrap();
    assert_eq!(serial.records.len(), 4);
    for (x, y) in paired(&serial.records, &piped.records) {
        assert_eq!(x.counts, y.counts, "{} differs", y.label());
        assert_eq!((x.images, x.skipped), (7, 0));
    }
    let (m, n) = (&serial.memory, &piped.memory);
    assert_eq!(
        (m.images, m.image_batches, m.dense_batched_images),
        (n.images, n.image_batches, n.dense_batched_images)
    );
    assert_eq!(n.image_batches, 4);
    // The baseline's group ran its dense logits across each batch's images.
    assert!(n.dense_batched_images > 0, "{n:?}");
    let err = go("resumed", true, Some(3)).unwrap_err();
    assert!(
        matches!(err, segsweep_runner::RunnerError::Interrupted),
        "{err}"
    );
    let resumed = go("resumed", true, None).unwrap();
    for (x, y) in paired(&serial.records, &resumed.records) {
        assert_eq!(x.counts, y.counts, "resumed: {} differs", y.label());
    }
}

/// In pipelined mode the next batch's prefixes (being computed) count against the memory
/// budget: a budget that holds one image's prefix and dense logits keeps every prefix in serial
/// mode, but not with the next batch's prefixes held too; they are recomputed, with identical
/// results.
#[test]
fn issue_7_the_pipelined_runner_counts_the_next_batch_against_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let go = |name: &str, pipeline: bool, budget: Option<u64>| {
        let mut exp = pipelined_spec(tmp.path(), name);
        if let Some(b) = budget {
            exp.memory.budget_bytes = b;
        }
        run(
            &exp,
            &RunOptions {
                run_id: Some(name.into()),
                pipeline: Some(pipeline),
                reuse: false,
                ..RunOptions::default()
            },
        )
        .unwrap()
    };
    let free = go("free", false, None);
    let m = &free.memory;
    assert_eq!(m.prefix_recomputes, 0);
    let budget = m.peak_prefix_bytes + m.peak_dense_bytes;
    let serial = go("serial", false, Some(budget));
    let piped = go("piped", true, Some(budget));
    assert_eq!(serial.memory.prefix_recomputes, 0, "{:?}", serial.memory);
    assert!(piped.memory.prefix_recomputes > 0, "{:?}", piped.memory);
    assert!(piped.memory.peak_held_bytes > budget, "{:?}", piped.memory);
    for (x, y) in paired(&serial.records, &piped.records) {
        assert_eq!(x.counts, y.counts, "{} differs", y.label());
    }
}

/// Extending a sweep (a new grid value: new configuration hashes, so a new default run id)
/// computes only the new configurations: finished ones are copied from the earlier run, with
/// identical records. `reuse: false` computes everything.
#[test]
fn an_extended_sweep_reuses_finished_configurations_of_earlier_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let first = run(&experiment(tmp.path()), &RunOptions::default()).unwrap();
    assert_eq!((first.ran, first.reused), (6, 0));
    let text = SPEC
        .replacen(
            "name = \"t\"",
            &format!("name = \"t\"\noutput_dir = \"{}\"", tmp.path().display()),
            1,
        )
        .replace("[0.05, 0.5]", "[0.05, 0.5, 0.1]");
    let extended = expand(load_text(Path::new("t.toml"), text, &[]).unwrap(), &[]).unwrap();
    let second = run(&extended, &RunOptions::default()).unwrap();
    assert_ne!(first.run_dir, second.run_dir);
    assert_eq!((second.ran, second.reused, second.resumed), (2, 6, 6));
    assert_eq!(second.reused_from, std::slice::from_ref(&first.run_dir));
    assert_eq!(second.records.len(), 8);
    for r in &first.records {
        let copy = second
            .records
            .iter()
            .find(|s| s.config_hash == r.config_hash)
            .unwrap();
        assert_eq!(copy, r, "a reused record is the earlier run's record");
    }
    // Records with the wrong weights or damaged are not reused: the third run, pointed at the
    // first run only (its own and the second run's directories aside), computes those.
    let third_dir = tmp.path().join("t/third");
    let damage = |hash: &str, f: &dyn Fn(&mut serde_json::Value)| {
        for run in [&first.run_dir, &second.run_dir] {
            let p = run.join("counts").join(format!("{hash}.json"));
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            f(&mut v);
            std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        }
    };
    // One refusal reason per record of the first run: other weights, damaged (a metric that
    // disagrees with its counts), other kernels, other samples, another class list, no image.
    damage(&first.records[0].config_hash, &|v| {
        v["model_file_hash"] = "other-weights".into()
    });
    damage(&first.records[1].config_hash, &|v| {
        v["metrics"]["miou_pct"] = 99.0.into()
    });
    damage(&first.records[2].config_hash, &|v| {
        v["kernels"] = "fused".into()
    });
    damage(&first.records[3].config_hash, &|v| {
        v["sample_ids"][0] = "elsewhere".into()
    });
    damage(&first.records[4].config_hash, &|v| {
        v["class_names"][1] = "bus".into()
    });
    damage(&first.records[5].config_hash, &|v| v["images"] = 0.into());
    let third = run(
        &extended,
        &RunOptions {
            run_id: Some("third".into()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(third.run_dir, third_dir);
    assert_eq!(
        (third.ran, third.reused),
        (6, 2),
        "the 6 damaged are computed, the 2 intact reused"
    );
    let fresh = run(
        &extended,
        &RunOptions {
            run_id: Some("fresh".into()),
            reuse: false,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!((fresh.ran, fresh.reused), (8, 0));
}

/// A reused record is named as the current spec names it: a configuration that was the
/// unswept default of one spec and a grid point of the next gets the grid point's label and
/// swept value (the numbers are the same: one hash).
#[test]
fn a_reused_record_takes_the_current_spec_s_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = |sweep: &str| {
        let text = format!(
            "[experiment]\nname = \"lab\"\noutput_dir = \"{}\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\nsynthetic_images = 1\n[[pipeline]]\nplugin = \"cliptrase\"\n{sweep}",
            tmp.path().display()
        );
        expand(load_text(Path::new("lab.toml"), text, &[]).unwrap(), &[]).unwrap()
    };
    let plain = run(&spec(""), &RunOptions::default()).unwrap();
    assert_eq!(plain.records[0].label(), "default");
    let swept = spec("[sweep.grid]\n\"cliptrase.correlation_temperature\" = [0.05, 0.5]\n");
    let second = run(&swept, &RunOptions::default()).unwrap();
    assert_eq!((second.ran, second.reused), (1, 1));
    let reused = second
        .records
        .iter()
        .find(|r| r.config_hash == plain.records[0].config_hash)
        .unwrap();
    assert_eq!(reused.label(), "correlation_temperature=0.05");
    assert_eq!(reused.counts, plain.records[0].counts);
    assert_eq!(reused.run_id, plain.records[0].run_id, "provenance kept");
    // From another experiment, the run id says which.
    let text = format!(
        "[experiment]\nname = \"other\"\noutput_dir = \"{}\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\nsynthetic_images = 1\n[[pipeline]]\nplugin = \"cliptrase\"\n",
        tmp.path().display()
    );
    let other = expand(load_text(Path::new("other.toml"), text, &[]).unwrap(), &[]).unwrap();
    let third = run(&other, &RunOptions::default()).unwrap();
    assert_eq!(third.reused, 1);
    assert_eq!(
        third.records[0].run_id,
        format!("lab/{}", plain.records[0].run_id)
    );
}

/// An interrupted run's checkpoint of a configuration that another run has since finished is
/// replaced by that record when the interrupted run resumes.
#[test]
fn reuse_replaces_an_obsolete_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let a = RunOptions {
        run_id: Some("a".into()),
        stop_after_images: Some(1),
        ..RunOptions::default()
    };
    assert!(run(&exp, &a).is_err(), "stopped after one image");
    let partials = |d: &Path| {
        std::fs::read_dir(d.join("counts"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .to_string_lossy()
                    .ends_with(".partial.json")
            })
            .count()
    };
    let dir_a = tmp.path().join("t/a");
    assert!(partials(&dir_a) > 0);
    run(
        &exp,
        &RunOptions {
            run_id: Some("b".into()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let resumed = run(
        &exp,
        &RunOptions {
            run_id: Some("a".into()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!((resumed.ran, resumed.reused), (0, 6));
    assert_eq!(partials(&dir_a), 0, "obsolete checkpoints were left");
}

/// A run directory reused with `--run-id` for another spec shows only that spec's
/// configurations: the earlier spec's records stay in counts/ but not in the tables.
#[test]
fn tables_of_a_reused_run_id_hold_only_the_current_spec_s_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        run_id: Some("pinned".into()),
        ..RunOptions::default()
    };
    let first = run(&experiment(tmp.path()), &opts).unwrap();
    let text = SPEC
        .replacen(
            "name = \"t\"",
            &format!("name = \"t\"\noutput_dir = \"{}\"", tmp.path().display()),
            1,
        )
        .replace("steps = 1", "steps = 2");
    let changed = expand(load_text(Path::new("t.toml"), text, &[]).unwrap(), &[]).unwrap();
    let second = run(&changed, &opts).unwrap();
    // The baseline rows (no pamr) are unchanged and finished; the 4 pamr rows are new.
    assert_eq!((second.ran, second.resumed), (4, 2));
    assert_eq!(second.records.len(), changed.configs.len());
    let summary = std::fs::read_to_string(second.run_dir.join("summary.csv")).unwrap();
    assert_eq!(
        summary.lines().count(),
        1 + changed.configs.len(),
        "{summary}"
    );
    let on_disk = std::fs::read_dir(second.run_dir.join("counts"))
        .unwrap()
        .count();
    assert_eq!(on_disk, first.records.len() + 4, "old records stay on disk");
    // The earlier spec is kept beside the current one.
    let kept = std::fs::read_to_string(second.run_dir.join("spec.1.toml")).unwrap();
    assert!(kept.contains("steps = 1"), "{kept}");
    let current = std::fs::read_to_string(second.run_dir.join("spec.toml")).unwrap();
    assert!(current.contains("steps = 2"), "{current}");
}

//! How a run stops part-way (Ctrl-C, a panicking plugin, an overlay that cannot be written):
//! the checkpoint written on the way out holds exactly the images finished, and resuming gives
//! the numbers of an uninterrupted run. Tiny random CLIP on synthetic data.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Tensor;
use segsweep_core::{register_plugin, LabelCtx, PluginSpec, Refiner, Result, Stage};
use segsweep_runner::{expand, load_text, run, run_dir, Experiment, RunOptions, RunnerError};

/// What the `test-stop` plugin does at its `n`-th call on this thread (the trial on the first
/// image is call 1, the run's image `i` call `i + 2`).
#[derive(Clone)]
enum Action {
    Cancel(Arc<AtomicBool>),
    Panic,
}

thread_local! {
    static AT: RefCell<Option<(usize, Action)>> = const { RefCell::new(None) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

/// A labels-stage plugin that returns the labels unchanged and, at the call set in `AT`, sets
/// the cancel flag (as Ctrl-C does) or panics. The runner calls it on the test's thread.
struct Stop;

impl Refiner for Stop {
    fn name(&self) -> &str {
        "test-stop"
    }

    fn labels(&self, labels: Tensor, _ctx: &LabelCtx<'_>) -> Result<Tensor> {
        let n = CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        match AT.with(|a| a.borrow().clone()) {
            Some((at, Action::Cancel(flag))) if at == n => flag.store(true, Ordering::SeqCst),
            Some((at, Action::Panic)) if at == n => panic!("test-stop: panic at call {n}"),
            _ => {}
        }
        Ok(labels)
    }
}

register_plugin!(PluginSpec {
    name: "test-stop",
    version: 1,
    summary: "test: cancels or panics at a set call",
    doc: "",
    stage: Stage::Labels,
    params: &[],
    check: |_, _| Ok(()),
    build: |_| Ok(Box::new(Stop)),
});

const IMAGES: usize = 6;

/// One configuration on `IMAGES` synthetic images, one crop per batch (so one image per chunk,
/// and in pipelined mode the next image's prefix is ready whenever one finishes).
fn spec(out: &Path, plugin: bool, visualise: bool) -> Experiment {
    let mut text = format!(
        "[experiment]\nname = \"stops\"\noutput_dir = \"{}\"\nsave_visualisations = {visualise}\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\nsynthetic_images = {IMAGES}\nshort_side = 224\n[inference]\nbatch_size = 1\n",
        out.display()
    );
    if plugin {
        text.push_str("[[pipeline]]\nplugin = \"test-stop\"\n");
    }
    let exp = expand(load_text(Path::new("stops.toml"), text, &[]).unwrap(), &[]).unwrap();
    assert_eq!(exp.configs.len(), 1);
    exp
}

fn opts(run_id: &str, pipeline: bool, cancel: Arc<AtomicBool>) -> RunOptions {
    RunOptions {
        run_id: Some(run_id.into()),
        pipeline: Some(pipeline),
        reuse: false,
        cancel,
        ..RunOptions::default()
    }
}

/// `next_image` of the configuration's checkpoint in run directory `dir`.
fn checkpointed(exp: &Experiment, dir: &Path) -> u64 {
    let p = dir
        .join("counts")
        .join(format!("{}.partial.json", exp.configs[0].hash));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["next_image"].as_u64().unwrap()
}

/// Arm the `test-stop` plugin: `action` at its `call`-th call from now (`None`: never).
fn arm(at: Option<(usize, Action)>) {
    CALLS.with(|c| c.set(0));
    AT.with(|a| *a.borrow_mut() = at);
}

/// The spec with the `test-stop` plugin in `out`, and options (run id `run`) whose cancel flag
/// the plugin sets at its `call`-th call, as Ctrl-C would.
fn cancelled_at(out: &Path, pipeline: bool, call: usize) -> (Experiment, RunOptions) {
    let exp = spec(out, true, false);
    let cancel = Arc::new(AtomicBool::new(false));
    let o = opts("run", pipeline, cancel.clone());
    arm(Some((call, Action::Cancel(cancel))));
    (exp, o)
}

/// The counts of an uninterrupted run of the same spec in its own output directory.
fn reference_counts(plugin: bool) -> segsweep_report::Counts {
    let out = tempfile::tempdir().unwrap();
    let exp = spec(out.path(), plugin, false);
    arm(None);
    let s = run(&exp, &opts("ref", false, Arc::default())).unwrap();
    assert_eq!(s.records[0].images, IMAGES);
    s.records[0].counts.clone()
}

/// Ctrl-C during image 2 finishes that image and stops: the checkpoint says 3, serial and
/// pipelined alike (pipelined, image 3's prefix is ready by then, but it is not in flight).
#[test]
fn ctrl_c_finishes_the_image_in_flight_and_no_other() {
    let reference = reference_counts(true);
    for pipeline in [false, true] {
        let out = tempfile::tempdir().unwrap();
        let (exp, o) = cancelled_at(out.path(), pipeline, 4);
        let err = run(&exp, &o).unwrap_err();
        assert!(matches!(err, RunnerError::Interrupted), "{err}");
        assert_eq!(
            checkpointed(&exp, &run_dir(&exp, &o)),
            3,
            "pipeline {pipeline}"
        );
        arm(None);
        let resumed = run(&exp, &opts("run", pipeline, Arc::default())).unwrap();
        assert_eq!(resumed.records[0].counts, reference, "pipeline {pipeline}");
    }
}

/// A plugin that panics on image 3 loses that image only: the images before it are in the
/// checkpoint (written as the panic passes), and resuming gives the uninterrupted numbers.
#[test]
fn a_panicking_plugin_loses_only_the_image_in_flight() {
    let reference = reference_counts(true);
    for pipeline in [false, true] {
        let out = tempfile::tempdir().unwrap();
        let exp = spec(out.path(), true, false);
        let o = opts("run", pipeline, Arc::default());
        arm(Some((5, Action::Panic)));
        // The panic becomes an error, after the checkpoints are written.
        let err = run(&exp, &o).unwrap_err();
        assert!(
            matches!(&err, RunnerError::Panicked { msg } if msg.contains("test-stop: panic at call 5")),
            "pipeline {pipeline}: {err}"
        );
        assert_eq!(
            checkpointed(&exp, &run_dir(&exp, &o)),
            3,
            "pipeline {pipeline}"
        );
        arm(None);
        let resumed = run(&exp, &o).unwrap();
        assert_eq!(resumed.records[0].counts, reference, "pipeline {pipeline}");
    }
}

/// An overlay that cannot be written (here a directory stands where image 2's PNG goes) fails
/// the run with images 0 and 1 checkpointed and image 2 neither counted nor marked done; once
/// the path is free, resuming scores image 2 once.
#[test]
fn an_overlay_that_cannot_be_written_leaves_a_consistent_checkpoint() {
    let reference = reference_counts(false);
    let out = tempfile::tempdir().unwrap();
    let exp = spec(out.path(), false, true);
    let o = opts("run", false, Arc::default());
    let vis = run_dir(&exp, &o)
        .join("visualisations")
        .join(&exp.configs[0].hash);
    let blocker = vis.join("synth_0002.png");
    std::fs::create_dir_all(&blocker).unwrap();
    let err = run(&exp, &o).unwrap_err().to_string();
    assert!(err.contains("synth_0002"), "{err}");
    assert!(
        err.contains("cannot write") && err.contains("the same command continues from there"),
        "{err}"
    );
    assert!(
        vis.join("synth_0001.png").is_file(),
        "overlay names changed: update this test"
    );
    assert_eq!(checkpointed(&exp, &run_dir(&exp, &o)), 2);
    std::fs::remove_dir(&blocker).unwrap();
    let resumed = run(&exp, &o).unwrap();
    assert_eq!(resumed.records[0].counts, reference);
    assert!(blocker.is_file());
}

/// Ctrl-C during the trial (call 1) stops before the run directory exists, with an error that
/// does not claim anything was saved; the next call runs the sweep from the start.
#[test]
fn ctrl_c_during_the_trial_leaves_no_run_directory() {
    let reference = reference_counts(true);
    let out = tempfile::tempdir().unwrap();
    let (exp, o) = cancelled_at(out.path(), false, 1);
    let err = run(&exp, &o).unwrap_err();
    assert!(matches!(err, RunnerError::InterruptedBeforeStart), "{err}");
    assert!(err.is_interrupt());
    assert!(!err.to_string().contains("saved"), "{err}");
    assert!(!run_dir(&exp, &o).exists());
    arm(None);
    let s = run(&exp, &opts("run", false, Arc::default())).unwrap();
    assert_eq!(s.records[0].counts, reference);
}

/// Ctrl-C during the last image finishes the run: every image is counted and the record is
/// written (the CLI then says the interrupt came after the last image).
#[test]
fn ctrl_c_during_the_last_image_finishes_the_run() {
    let reference = reference_counts(true);
    for pipeline in [false, true] {
        let out = tempfile::tempdir().unwrap();
        let (exp, o) = cancelled_at(out.path(), pipeline, IMAGES + 1);
        let s = run(&exp, &o).unwrap();
        assert!(o.cancel.load(Ordering::SeqCst));
        assert_eq!(s.records[0].images, IMAGES, "pipeline {pipeline}");
        assert_eq!(s.records[0].counts, reference, "pipeline {pipeline}");
        arm(None);
    }
}

/// `stop_after_images = 0` (`--stop-after-images 0`) stops as an interrupt before the first
/// image: no run directory, and no claim that anything was saved.
#[test]
fn stopping_after_zero_images_computes_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let exp = spec(out.path(), false, false);
    let o = RunOptions {
        stop_after_images: Some(0),
        ..opts("zero", false, Arc::default())
    };
    let err = run(&exp, &o).unwrap_err();
    assert!(matches!(err, RunnerError::InterruptedBeforeStart), "{err}");
    assert!(!run_dir(&exp, &o).exists());
}

/// A plugin that panics in the trial (its first call) ends the run with an error naming the
/// panic, before the run directory exists.
#[test]
fn a_plugin_panicking_in_the_trial_is_an_error_before_any_work() {
    let out = tempfile::tempdir().unwrap();
    let exp = spec(out.path(), true, false);
    let o = opts("run", false, Arc::default());
    arm(Some((1, Action::Panic)));
    let err = run(&exp, &o).unwrap_err();
    arm(None);
    assert!(
        matches!(&err, RunnerError::Panicked { msg } if msg.contains("panic at call 1")),
        "{err}"
    );
    assert!(!run_dir(&exp, &o).exists());
}

//! A plugin that breaks the contract (a stage method it does not implement, a `name()` that is
//! not its registered name) fails when the sweep starts, before the run directory exists,
//! naming the plugin: not at its first image, hours into a sweep.

use std::path::Path;

use segsweep_core::{register_plugin, DenseCtx, DenseMaps, PluginSpec, Refiner, Result, Stage};
use segsweep_runner::{expand, load_text, RunOptions};

mod common;

/// Registered for the labels stage but implements `dense`.
struct WrongStage;

impl Refiner for WrongStage {
    fn name(&self) -> &str {
        "test-wrong-stage"
    }

    fn dense(&self, maps: DenseMaps, _ctx: &DenseCtx<'_>) -> Result<DenseMaps> {
        Ok(maps)
    }
}

register_plugin!(PluginSpec {
    name: "test-wrong-stage",
    version: 1,
    summary: "test: registers the labels stage, implements dense",
    doc: "",
    stage: Stage::Labels,
    params: &[],
    check: |_, _| Ok(()),
    build: |_| Ok(Box::new(WrongStage)),
});

/// A correct dense plugin whose `name()` differs from its registered name.
struct Misnamed;

impl Refiner for Misnamed {
    fn name(&self) -> &str {
        "something-else"
    }

    fn dense(&self, maps: DenseMaps, _ctx: &DenseCtx<'_>) -> Result<DenseMaps> {
        Ok(maps)
    }
}

register_plugin!(PluginSpec {
    name: "test-misnamed",
    version: 1,
    summary: "test: name() is not the registered name",
    doc: "",
    stage: Stage::DenseLogits,
    params: &[],
    check: |_, _| Ok(()),
    build: |_| Ok(Box::new(Misnamed)),
});

/// The error of a sweep whose variant `+p` runs `plugin` on 3 synthetic images (after a
/// baseline group), asserting that no run directory was created.
fn fails_before_any_work(plugin: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    let text = format!(
        "[experiment]\nname = \"contract\"\noutput_dir = \"{}\"\n[model]\nsource = \"builtin:tiny-random\"\n[dataset]\nname = \"synthetic\"\nsynthetic_images = 3\n[[pipeline]]\nplugin = \"{plugin}\"\n[[sweep.variants]]\nname = \"baseline\"\npipeline = []\n[[sweep.variants]]\nname = \"+p\"\n",
        out.path().display()
    );
    let exp = expand(
        load_text(Path::new("contract.toml"), text, &[]).unwrap(),
        &[],
    )
    .unwrap();
    assert_eq!(exp.configs.len(), 2);
    let opts = RunOptions::default();
    common::run_fails_without_run_dir(&exp, &opts)
}

#[test]
fn a_stage_the_plugin_does_not_implement_fails_before_the_run_directory_exists() {
    let err = fails_before_any_work("test-wrong-stage");
    assert!(
        err.contains("test-wrong-stage") && err.contains("labels") && err.contains("synth_0000"),
        "{err}"
    );
}

#[test]
fn a_name_other_than_the_registered_one_fails_before_the_run_directory_exists() {
    let err = fails_before_any_work("test-misnamed");
    assert!(
        err.contains("test-misnamed") && err.contains("something-else") && err.contains("hint"),
        "{err}"
    );
}

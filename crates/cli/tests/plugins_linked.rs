//! Every plugin crate under `plugins/` is linked into the binary: the linker drops a crate that
//! nothing names, and its `inventory` registration with it (inventory issue #50), silently.

mod common;

/// The package names of `plugins/*/Cargo.toml`.
fn plugin_crates() -> Vec<String> {
    let dir = common::repo("plugins");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("Cargo.toml")).ok())
        .filter_map(|toml| {
            let v: toml::Table = toml.parse().ok()?;
            Some(v.get("package")?.get("name")?.as_str()?.to_string())
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_plugin_crate_is_named_in_the_binary_and_a_dependency_of_it() {
    let crates = plugin_crates();
    assert!(crates.len() >= 6, "{crates:?}");
    let main = std::fs::read_to_string(common::repo("crates/cli/src/main.rs")).unwrap();
    let manifest = std::fs::read_to_string(common::repo("crates/cli/Cargo.toml")).unwrap();
    for name in &crates {
        let ident = name.replace('-', "_");
        assert!(
            main.contains(&format!("use {ident} as _;")),
            "plugin crate {name} is not named in crates/cli/src/main.rs: add `use {ident} as _;` \
             there, or its plugins never register (README, \"Writing a plugin\")"
        );
        assert!(
            manifest.contains(&format!("{name}.workspace = true")),
            "plugin crate {name} is not a dependency of crates/cli/Cargo.toml: add \
             `{name}.workspace = true` to its [dependencies]"
        );
    }
}

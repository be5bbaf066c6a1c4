//! `segsweep plugins [NAME]`.

use anyhow::Result;
use clap::Args;
use segsweep_core::{registry, CoreError};

#[derive(Args, Debug)]
pub struct PluginsArgs {
    /// Show one plugin in full: stage, documentation and every parameter.
    pub name: Option<String>,
}

pub fn run(args: PluginsArgs) -> Result<()> {
    let reg = registry()?;
    match args.name {
        None => {
            println!("{:<12} {:<22} summary", "plugin", "stage");
            for p in reg.iter() {
                println!("{:<12} {:<22} {}", p.name, p.stage.describe(), p.summary);
            }
            println!("\n`segsweep plugins NAME` shows a plugin's parameters and documentation.");
        }
        Some(name) => {
            let p = reg.get(&name).map_err(unknown_plugin)?;
            println!(
                "{} — {}\nstage: {} ({})\nversion: {} (part of the configuration hash)\n",
                p.name,
                p.summary,
                p.stage.describe(),
                p.stage,
                p.version
            );
            println!("{}\n", p.doc.trim());
            if p.params.is_empty() {
                println!("parameters: none");
            } else {
                println!("parameters:");
                for s in p.params {
                    println!("  {:<24} {}  (default {})", s.name, s.ty, s.default);
                    for line in s.doc.lines() {
                        println!("      {}", line.trim());
                    }
                }
            }
        }
    }
    Ok(())
}

/// An unknown name (the registry's error suggests the nearest registered one, without case:
/// `PAMR` → `pamr`) gets a hint.
fn unknown_plugin(e: CoreError) -> anyhow::Error {
    if !matches!(e, CoreError::UnknownPlugin { .. }) {
        return e.into();
    }
    anyhow::anyhow!(
        "{e}\n  hint: plugin names are lower-case; `segsweep plugins` lists them with their stage and summary"
    )
}

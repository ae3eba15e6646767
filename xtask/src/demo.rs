//! The demo: for now, the offline verbs on the built-in catalog.
// TODO(#3): the daemon in two namespaces joined by a veth pair.

use std::process::Command;

use anyhow::{Context as _, bail};

fn allowgate(args: &[&str]) -> anyhow::Result<bool> {
    println!("\n$ allowgate {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--package", "allowgate", "--"])
        .args(args)
        .status()
        .context("cannot run allowgate")?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("allowgate {} failed", args.join(" ")),
    }
}

pub fn run() -> anyhow::Result<()> {
    allowgate(&["regions"])?;
    allowgate(&["show", "--region", "eu1", "--feature", "portal"])?;
    allowgate(&["check", "13.80.125.22", "--port", "443", "--region", "eu1"])?;
    allowgate(&["check", "13.80.125.22", "--port", "80", "--region", "eu1"])?;
    Ok(())
}

//! `cargo xtask check-rules`: packaging/allowgate.rules.yml through Prometheus's own
//! `promtool`: `check rules` (syntax, PromQL, templates) and `test rules` with
//! tests/alerts/allowgate.rules.test.yml (each alert fires on what should raise it and
//! not on the series beside it).
//!
//! promtool is Debian's (the `prometheus` package): the one on PATH, else the package
//! downloaded with `apt-get download` and unpacked in a temporary directory, so that no
//! Prometheus server is installed, let alone started, to check a file.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};

pub fn check() -> anyhow::Result<()> {
    let unpacked = tempfile::tempdir()?;
    let promtool = match which("promtool") {
        Some(p) => p,
        None => download(unpacked.path())?,
    };
    let root = crate::workspace();
    println!("== {} check rules packaging/allowgate.rules.yml", promtool.display());
    run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(root.join("packaging/allowgate.rules.yml")))?;
    println!(
        "== {} test rules tests/alerts/allowgate.rules.test.yml",
        promtool.display()
    );
    // Rule files in a test file are relative to it.
    run(Command::new(&promtool)
        .args(["test", "rules", "allowgate.rules.test.yml"])
        .current_dir(root.join("tests/alerts")))?;
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// promtool from Debian's `prometheus` package, unpacked under `dir`.
fn download(dir: &Path) -> anyhow::Result<PathBuf> {
    println!("== promtool: Debian's prometheus package, unpacked in a temporary directory");
    run(Command::new("apt-get")
        .args(["download", "-q", "prometheus"])
        .current_dir(dir))
    .context("promtool is not installed and `apt-get download prometheus` failed: install the prometheus package")?;
    let deb = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let promtool = root.join("usr/bin/promtool");
    ensure!(promtool.is_file(), "the prometheus package holds no usr/bin/promtool");
    Ok(promtool)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let what = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

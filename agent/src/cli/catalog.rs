//! `allowgate catalog import`: read a (newer) version of the page into a catalog file.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::catalog::parse_page;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Parse a "Network requirements" page (Markdown) into a catalog file (JSON) that
    /// the config's `catalog` key can name.
    Import {
        /// The page, in the Markdown of the docs repository.
        file: PathBuf,
        /// Where to write the catalog [default: standard output].
        #[arg(long, short, value_name = "PATH")]
        output: Option<PathBuf>,
    },
}

pub fn execute(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Import { file, output } = cmd;
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let catalog = parse_page(&text, &name).with_context(|| format!("{}", file.display()))?;
    let json = serde_json::to_string_pretty(&catalog)?;
    match &output {
        Some(path) => {
            // Write whole or not at all: a half-written catalog must not replace a good one.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}")?;
        }
    }
    let regions: Vec<&str> = catalog.regions.iter().map(|r| r.id.as_str()).collect();
    eprintln!(
        "allowgate: {}: {} entries for regions {}",
        file.display(),
        catalog.entries.len(),
        regions.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

//! Project tasks that need more than `cargo`: every test (as root), the demo, the bench,
//! the install, the Debian package with its man pages and completions, and the test of
//! that package under a real systemd.

mod bench;
mod benchkit;
mod config_bench;
mod import_bench;
// The tests' namespaces, pins and packet builder serve the demo and the bench too.
use testkit as common;
mod container_test;
mod deb;
mod demo;
mod docs;
mod install;
mod rules;
mod systemd_test;
mod traffic;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Every test: unit, property, test-run verdicts, netns end to end (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: the agent on one end of a veth pair between two demo namespaces.
    Demo,
    /// Per-packet cost (BPF_PROG_TEST_RUN, against a do-nothing XDP program) and the
    /// time to compile and load large policies; with --traffic, drop and pass capacity
    /// on real frames through veths (needs root; runs the release build).
    Bench(bench::BenchArgs),
    /// Install the release binary, the systemd unit and (unless there is one) the
    /// example config; `--dry-run` shows the steps, `--root DIR` stages them under DIR.
    Install(install::InstallArgs),
    /// The Debian package (target/debian/allowgate_VERSION_ARCH.deb) from the release
    /// build: binary, unit, config (a conffile), man pages, completions, examples.
    Deb(deb::DebArgs),
    /// Man pages and shell completions only, generated from the CLI's definitions.
    Docs(docs::DocsArgs),
    /// Boot a Debian container with systemd as PID 1, install the package in it, and
    /// prove the unit: start, probes, reload, stop/start, the sandbox, the journal
    /// (needs root, mmdebstrap and systemd-nspawn; fetches Debian packages).
    TestSystemd(systemd_test::Args),
    /// Build packaging/Containerfile with podman from the package and run it as the
    /// DaemonSet does, against a veth pair with the demo's probes (needs root, podman).
    TestContainer(container_test::Args),
    /// Validate packaging/kubernetes/ against the Kubernetes schemas, offline
    /// (kubernetes-validate from PyPI, in a throwaway virtualenv).
    CheckManifests,
    /// Check packaging/allowgate.rules.yml and run its tests with promtool (from PATH,
    /// else from Debian's prometheus package, downloaded and unpacked, not installed).
    CheckRules,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Test { args } => test(&args),
        Task::Demo => demo::run(),
        Task::Bench(args) => bench::run(&args),
        Task::Install(args) => install::run(&args),
        Task::Deb(args) => deb::run(&args),
        Task::Docs(args) => docs::run(&args),
        Task::TestSystemd(args) => systemd_test::run(&args),
        Task::TestContainer(args) => container_test::run(&args),
        Task::CheckManifests => container_test::check_manifests(),
        Task::CheckRules => rules::check(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace's root directory.
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where cargo builds: CARGO_TARGET_DIR, else the workspace's target/.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader, Write as _};
    if !is_root() {
        bail!("the BPF and netns tests load programs and make namespaces: run `cargo xtask test` as root");
    }
    let mut child = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    // Pass the output through, and add up the per-binary results into one closing line.
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']).map(str::trim) {
                if let Some(n) = part.strip_suffix(" passed") {
                    passed += n.parse::<u64>().unwrap_or(0);
                } else if let Some(n) = part.strip_suffix(" failed") {
                    failed += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    let status = child.wait()?;
    std::io::stdout().flush()?;
    println!("\nsummary: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

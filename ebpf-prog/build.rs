//! Builds the BPF programs in `c/` with clang and checks that the C structs of
//! `c/abi.h` have the sizes the Rust mirrors in `src/lib.rs` assert.
//!
//! Missing tools end the build with one line saying what to install, not with a
//! page of compiler output.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MISSING_TOOLS: &str =
    "allowgate-ebpf: clang and libbpf-dev are needed to build the BPF programs: apt-get install clang libbpf-dev";

/// (source under `c/`, object name in `$OUT_DIR`)
const PROGRAMS: [(&str, &str); 3] = [
    ("filter.bpf.c", "filter.bpf.o"),
    ("noop.bpf.c", "noop.bpf.o"),
    ("traffic.bpf.c", "traffic.bpf.o"),
];

/// Compiled only for its `_Static_assert`s on the sizes of the `abi.h` structs.
const ABI_CHECK: &str = "abi_check.c";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let c_dir = manifest_dir.join("c");

    println!("cargo::rerun-if-env-changed=CLANG");
    rerun_if_changed_tree(&c_dir);

    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    if Command::new(&clang).arg("--version").output().is_err() {
        fail(MISSING_TOOLS);
    }

    let include_args = include_args(&c_dir);

    let abi_check = clang_command(&clang, &include_args)
        .arg("-fsyntax-only")
        .arg(c_dir.join(ABI_CHECK))
        .output();
    check_clang(abi_check, ABI_CHECK);

    for (source, object) in PROGRAMS {
        let output = clang_command(&clang, &include_args)
            .arg("-c")
            .arg(c_dir.join(source))
            .arg("-o")
            .arg(out_dir.join(object))
            .output();
        check_clang(output, source);
    }
}

fn clang_command(clang: &std::ffi::OsStr, include_args: &[String]) -> Command {
    let mut cmd = Command::new(clang);
    cmd.args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpfel"])
        .args(include_args);
    cmd
}

/// `-I/usr/include/<multiarch>` (where `asm/types.h` lives on Debian) and `-I c`.
fn include_args(c_dir: &Path) -> Vec<String> {
    let mut candidates = Vec::new();
    if let Some(triple) = multiarch() {
        candidates.push(format!("/usr/include/{triple}"));
    }
    candidates.push(format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH));
    candidates.push("/usr/include/x86_64-linux-gnu".to_string());
    let multiarch_dir = candidates
        .iter()
        .find(|dir| Path::new(dir).join("asm/types.h").exists())
        .unwrap_or(&candidates[0]);
    vec![format!("-I{multiarch_dir}"), format!("-I{}", c_dir.display())]
}

fn multiarch() -> Option<String> {
    let output = Command::new("gcc").arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !triple.is_empty()).then_some(triple)
}

fn check_clang(output: std::io::Result<Output>, source: &str) {
    let output = match output {
        Ok(output) => output,
        Err(_) => fail(MISSING_TOOLS),
    };
    if output.status.success() {
        return;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if missing_system_header(&stderr) {
        fail(MISSING_TOOLS);
    }
    // A real compile error: show all of it (cargo prints a failed build
    // script's stderr), it is what the author of c/ needs.
    eprintln!("{stderr}");
    eprintln!("allowgate-ebpf: clang failed on c/{source}");
    std::process::exit(1);
}

/// `fatal error: 'bpf/bpf_helpers.h' file not found` and the like: the headers of
/// libbpf-dev (bpf/), linux-libc-dev (linux/) or the multiarch asm/ are missing,
/// which is a setup problem, not a bug in `c/`.
fn missing_system_header(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        line.contains("file not found") && ["'bpf/", "'asm/", "'linux/"].iter().any(|dir| line.contains(dir))
    })
}

/// One line, no "failed to run custom build command" page around it.
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(0);
}

fn rerun_if_changed_tree(dir: &Path) {
    println!("cargo::rerun-if-changed={}", dir.display());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rerun_if_changed_tree(&path);
        } else {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
}

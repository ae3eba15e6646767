//! The BPF filesystem the pins live in.

use std::{path::PathBuf, process::Command};

use super::DataplaneError;

const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs at /sys/fs/bpf unless one is there already: mounting again would stack
/// an empty bpffs over the existing pins and hide them.
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(BPFFS) && l.split_whitespace().nth(2) == Some("bpf"))
        })
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    let status = Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(DataplaneError::Bpffs {
            path: PathBuf::from(BPFFS),
            source: std::io::Error::other(format!("mount -t bpf exited with {s}")),
        }),
        Err(source) => Err(DataplaneError::Bpffs {
            path: PathBuf::from(BPFFS),
            source,
        }),
    }
}

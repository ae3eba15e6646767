//! The BPF filesystem the pins live in.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

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

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Refuses a `bpffs_dir` that is not on a bpf filesystem: pins can only live there,
/// and the loader's own error would blame BTF.
pub fn check_on_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    // The nearest existing ancestor is what the directory will be created on.
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match rustix::fs::statfs(existing) {
        Ok(fs) if fs.f_type == BPF_FS_MAGIC => Ok(()),
        _ => Err(DataplaneError::NotBpffs { dir: dir.to_path_buf() }),
    }
}

/// An exclusive lock on `bpffs_dir`, held for the daemon's life: two daemons on one
/// set of pins would each believe its own policy is the one enforced.
pub fn lock_pins(dir: &Path) -> Result<std::fs::File, DataplaneError> {
    std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Bpffs {
        path: dir.to_path_buf(),
        source,
    })?;
    let file = std::fs::File::open(dir).map_err(|source| DataplaneError::Bpffs {
        path: dir.to_path_buf(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DataplaneError::Locked { dir: dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(source)) => Err(DataplaneError::Bpffs {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

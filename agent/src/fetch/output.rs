//! FILE and its sidecar on disk: written whole or not at all (a temporary file next to
//! it, fsync, rename, fsync of the directory), with the permission bits and owner of the
//! file it replaces.
//!
//! A FILE that is a symbolic link is refused, not followed: `catalog fetch` runs as root
//! from a timer, and following a link planted in its directory would let whoever can
//! write there choose what root replaces. (The rename replaces a link, never its target,
//! so one planted after the check is harmless too: the link is gone, the target intact.)

use std::{
    fs::{self, File},
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use super::FetchError;

/// What a new FILE keeps of the one it replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Existing {
    /// Permission bits (0o777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Checks that `path` is a place for FILE: a regular file or nothing, not a link.
pub fn check(path: &Path) -> Result<Option<Existing>, FetchError> {
    if path.file_name().is_none() {
        return Err(FetchError::BadOutput { path: path.into() });
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FetchError::Write {
                path: path.into(),
                source,
            });
        }
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).unwrap_or_default();
        return Err(FetchError::OutputIsLink {
            path: path.into(),
            target,
        });
    }
    if !meta.is_file() {
        return Err(FetchError::OutputNotFile { path: path.into() });
    }
    Ok(Some(Existing {
        mode: meta.permissions().mode() & 0o777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// A file next to its final place, removed unless it is renamed there: a failure at
/// any point leaves the final file as it was.
pub struct TempFile {
    path: PathBuf,
    target: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    /// A new temporary file for `target`, with `like`'s mode and owner when given.
    pub fn create(target: &Path, like: Option<Existing>) -> Result<TempFile, FetchError> {
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let path = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let write_error = |source| FetchError::Write {
            path: path.clone(),
            source,
        };
        // A leftover of a process with the same id that died is stale; create_new then
        // refuses to follow anything planted at the name in the meantime.
        let _ = fs::remove_file(&path);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        if like.is_some() {
            // Nobody else may read it before its mode is set below.
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(write_error)?;
        let temp = TempFile {
            path: path.clone(),
            target: target.to_path_buf(),
            file,
            persisted: false,
        };
        if let Some(like) = like {
            let meta = temp.file.metadata().map_err(write_error)?;
            if (meta.uid(), meta.gid()) != (like.uid, like.gid) {
                std::os::unix::fs::fchown(&temp.file, Some(like.uid), Some(like.gid)).map_err(|source| {
                    FetchError::Owner {
                        path: target.to_path_buf(),
                        uid: like.uid,
                        gid: like.gid,
                        source,
                    }
                })?;
            }
            // After the owner: chown clears set-id bits, and umask does not apply here.
            temp.file
                .set_permissions(fs::Permissions::from_mode(like.mode))
                .map_err(write_error)?;
        }
        Ok(temp)
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.file.write_all(bytes).map_err(|source| FetchError::Write {
            path: self.path.clone(),
            source,
        })
    }

    pub fn sync(&self) -> Result<(), FetchError> {
        self.file.sync_all().map_err(|source| FetchError::Write {
            path: self.path.clone(),
            source,
        })
    }

    pub fn persist(mut self) -> Result<(), FetchError> {
        fs::rename(&self.path, &self.target).map_err(|source| FetchError::Write {
            path: self.target.clone(),
            source,
        })?;
        self.persisted = true;
        // The rename is durable only once the directory is: sync it, best effort
        // (some file systems refuse to sync a directory, and the data is safe anyway).
        let dir = match self.target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `target` whole, with `like`'s mode and owner.
pub fn write_whole(target: &Path, bytes: &[u8], like: Option<Existing>) -> Result<(), FetchError> {
    let mut temp = TempFile::create(target, like)?;
    temp.write(bytes)?;
    temp.sync()?;
    temp.persist()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("page.md");
        fs::write(&target, "old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        // Another owner, when the test may give one (it runs as root in `cargo xtask test`).
        let root = fs::metadata(&target).unwrap().uid() == 0;
        if root {
            std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
        }
        let like = check(&target).unwrap().expect("it exists");
        write_whole(&target, b"new", Some(like)).unwrap();
        let meta = fs::metadata(&target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        if root {
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        } else {
            eprintln!("not root: the owner part of this test is skipped");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no leftovers");
    }

    #[test]
    fn a_link_or_a_directory_is_no_place_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.md");
        fs::write(&real, "x").unwrap();
        let link = dir.path().join("link.md");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        match check(&link) {
            Err(FetchError::OutputIsLink { target, .. }) => assert_eq!(target, real),
            other => panic!("{other:?}"),
        }
        assert!(matches!(check(dir.path()), Err(FetchError::OutputNotFile { .. })));
        assert!(matches!(check(Path::new("/")), Err(FetchError::BadOutput { .. })));
        assert_eq!(check(&dir.path().join("new.md")).unwrap(), None);
    }
}

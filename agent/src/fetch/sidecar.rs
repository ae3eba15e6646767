//! `FILE.fetch.json`: what the last fetch into FILE found, next to it. Its validators
//! (ETag, Last-Modified) make the next fetch conditional, but only while FILE is still
//! byte for byte what was written (its SHA-256), so an edited FILE, even one of the same
//! length, is fetched again rather than kept because the server says "not modified".
//! It also says when FILE was last found current and what it is (the date in its name,
//! its version), for `status` and `catalog fetch`'s age check.
//!
//! The sidecar is read at most `MAX_SIDECAR_BYTES`: a huge or sparse file there is
//! ignored, not read.

use std::{
    fs::File,
    io::{self, Read as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// A sidecar is a few hundred bytes; anything past this is not one.
pub const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The document asked for (a details page's current file, else the URL given),
    /// before redirects: validators of another URL mean nothing.
    pub url: String,
    /// The `--source` it was found by, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// SHA-256 of FILE as written, in hex; empty in sidecars of older versions (they
    /// then validate nothing).
    #[serde(default)]
    pub sha256: String,
    pub bytes: u64,
    /// When FILE was written (RFC 3339).
    pub fetched: String,
    /// When the server last said FILE is current: written, or answered "not modified"
    /// (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
    /// The date in the document's name (`ServiceTags_Public_20260928.json`:
    /// `2026-09-28`), for sources published under dated names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// What the catalog says of its version (`changeNumber 412`, `ms.date 12/17/2025`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Sidecar {
    /// `checked` (else `fetched`) in seconds since the epoch.
    pub fn checked_at(&self) -> Option<u64> {
        let text = self.checked.as_deref().unwrap_or(&self.fetched);
        let t = humantime::parse_rfc3339_weak(text).ok()?;
        t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
    }
}

/// Where the sidecar of `output` is: `FILE.fetch.json` next to it.
pub fn path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".fetch.json");
    output.with_file_name(name)
}

/// The sidecar of `output`, if there is a readable one of a sane size.
pub fn read(output: &Path) -> Option<Sidecar> {
    let file = File::open(path(output)).ok()?;
    if file.metadata().ok()?.len() > MAX_SIDECAR_BYTES {
        return None;
    }
    let mut text = Vec::new();
    file.take(MAX_SIDECAR_BYTES).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// SHA-256 of the file at `path` in hex, if it is a regular file of at most `max`
/// bytes that can be read.
pub fn sha256_of_file(path: &Path, max: u64) -> Option<String> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut reader = io::BufReader::new(file.take(max + 1));
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                context.update(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    (total <= max).then(|| hex(context.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, as the sidecar writes times.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sidecar_sits_next_to_the_output() {
        assert_eq!(
            path(Path::new("/var/lib/allowgate/catalog/page.md")),
            Path::new("/var/lib/allowgate/catalog/page.md.fetch.json")
        );
        assert_eq!(path(Path::new("page.md")), Path::new("page.md.fetch.json"));
    }

    #[test]
    fn a_huge_or_broken_sidecar_is_none_and_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("page.md");
        // 2 GiB, sparse: reading it whole took 8.7 s (issue 23); now it is not read.
        let file = File::create(path(&output)).unwrap();
        file.set_len(2 << 30).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(read(&output), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        std::fs::write(path(&output), "{not json").unwrap();
        assert_eq!(read(&output), None);
    }

    #[test]
    fn hashes_are_sha256_and_bounded() {
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(sha256_of_file(&f, 3), Some(sha256(b"abc")));
        assert_eq!(sha256_of_file(&f, 2), None, "bigger than the bound");
        assert_eq!(sha256_of_file(&dir.path().join("nope"), 10), None);
    }
}

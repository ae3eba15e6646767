//! `cargo xtask deb`: the Debian package, from the release build, written with
//! `dpkg-deb --build` on a staged tree.
//!
//! Written here rather than with cargo-deb: every file, mode and maintainer script is
//! in this one place and under test, the unit's ExecStart is rewritten with the same
//! code `cargo xtask install` uses, the man pages and completions come from `docs`, and
//! a fresh CI machine needs nothing but dpkg (which every Debian has) instead of
//! compiling a cargo plugin first.
//!
//! What the package does to a system, in the order an operator meets it:
//! - install: files in place, /etc/allowgate/config.toml (a conffile: dpkg asks before
//!   replacing an edited one), /var/lib/allowgate, `systemctl daemon-reload`. Never
//!   enabled, never started: the example config enforces nothing and the operator
//!   turns the service on (`systemctl enable --now allowgate`).
//! - upgrade: a running service is restarted (`try-restart`), which adopts the pinned
//!   policy without a gap; a stopped one stays stopped.
//! - remove: the service is stopped; as the unit documents, the pinned policy stays
//!   enforced (it is what keeps the host inside its allow list).
//! - purge: the pins are removed (that detaches the programs: enforcement ends), then
//!   /var/lib/allowgate and the config.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const CATALOG_UPDATE_SERVICE: &str = include_str!("../../packaging/allowgate-catalog-update.service");
const CATALOG_UPDATE_TIMER: &str = include_str!("../../packaging/allowgate-catalog-update.timer");
const ALERT_RULES: &str = include_str!("../../packaging/allowgate.rules.yml");
const EXAMPLE_CONFIG: &str = include_str!("../../packaging/config.example.toml");
const CATALOG_PAGE: &str = include_str!("../../catalog/network-requirements-2019-11.md");
const README: &str = include_str!("../../README.md");
/// Where the package puts the binary; the unit's ExecStart follows.
pub const PREFIX: &str = "/usr";

#[derive(Debug, clap::Args)]
pub struct DebArgs {
    /// Use target/release/allowgate as it is, without `cargo build --release`.
    #[arg(long)]
    no_build: bool,
    /// Where the .deb goes [default: target/debian].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: &DebArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(default_out);
    let deb = package(!args.no_build, &out)?;
    println!("{}", deb.display());
    Ok(())
}

/// target/debian, where `cargo xtask deb` puts the package.
pub fn default_out() -> PathBuf {
    crate::target_dir().join("debian")
}

/// The release build (unless `release_build` is false), then the package in `out`;
/// its path.
pub fn package(release_build: bool, out: &Path) -> anyhow::Result<PathBuf> {
    if release_build {
        build_release()?;
    }
    build(&crate::target_dir().join("release/allowgate"), out)
}

fn build_release() -> anyhow::Result<()> {
    println!("build: cargo build --release -p allowgate");
    let status = crate::cargo()
        .current_dir(crate::workspace())
        .args(["build", "--release", "-p", "allowgate"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p allowgate failed");
    }
    Ok(())
}

/// Stages the package's tree next to `out` and builds the .deb in `out`; returns its path.
pub fn build(binary: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = architecture()?;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let stage = out.join(format!("allowgate_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    let binary_bytes =
        fs::read(binary).with_context(|| format!("cannot read the release binary {}", binary.display()))?;
    let tree = Tree(stage.clone());

    tree.file("usr/bin/allowgate", &binary_bytes, 0o755)?;
    strip_debug(&stage.join("usr/bin/allowgate"))?;
    let unit = crate::install::unit_for(Path::new(PREFIX))?;
    tree.file("usr/lib/systemd/system/allowgate.service", unit.as_bytes(), 0o644)?;
    tree.file("etc/allowgate/config.toml", EXAMPLE_CONFIG.as_bytes(), 0o640)?;

    let doc = "usr/share/doc/allowgate";
    tree.file(&format!("{doc}/config.example.toml"), EXAMPLE_CONFIG.as_bytes(), 0o644)?;
    tree.file(&format!("{doc}/README.md"), README.as_bytes(), 0o644)?;
    tree.file(&format!("{doc}/copyright"), copyright().as_bytes(), 0o644)?;
    for (name, text) in [
        ("allowgate-catalog-update.service", CATALOG_UPDATE_SERVICE),
        ("allowgate-catalog-update.timer", CATALOG_UPDATE_TIMER),
        ("allowgate.rules.yml", ALERT_RULES),
    ] {
        let text = examples_binary(text, name)?;
        tree.file(&format!("{doc}/examples/{name}"), text.as_bytes(), 0o644)?;
    }
    // The page the built-in catalog was parsed from, for `catalog diff` against a newer one.
    tree.file(
        "usr/share/allowgate/network-requirements-2019-11.md",
        CATALOG_PAGE.as_bytes(),
        0o644,
    )?;

    let docs = tempfile::tempdir()?;
    crate::docs::write_all(docs.path())?;
    for section in ["man5", "man8"] {
        let dir = docs.path().join("man").join(section);
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let page = gzip(&fs::read(entry.path())?)?;
            tree.file(&format!("usr/share/man/{section}/{name}.gz"), &page, 0o644)?;
        }
    }
    for (from, to) in [
        ("bash/allowgate", "usr/share/bash-completion/completions/allowgate"),
        ("zsh/_allowgate", "usr/share/zsh/vendor-completions/_allowgate"),
        (
            "fish/allowgate.fish",
            "usr/share/fish/vendor_completions.d/allowgate.fish",
        ),
    ] {
        tree.file(to, &fs::read(docs.path().join("completions").join(from))?, 0o644)?;
    }

    let installed_kib = tree.size()?.div_ceil(1024);
    tree.file(
        "DEBIAN/control",
        control(version, &arch, installed_kib, &depends(&binary_bytes)).as_bytes(),
        0o644,
    )?;
    tree.file("DEBIAN/conffiles", b"/etc/allowgate/config.toml\n", 0o644)?;
    tree.file("DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    tree.file("DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    tree.file("DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;

    let deb = out.join(format!("allowgate_{version}_{arch}.deb"));
    // root:root whoever builds it; xz, which every dpkg reads.
    let output = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .output()
        .context("cannot run dpkg-deb (Debian's dpkg package)")?;
    if !output.status.success() {
        bail!(
            "dpkg-deb --build {} failed: {}",
            stage.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    fs::remove_dir_all(&stage).ok();
    Ok(deb)
}

/// The staged tree, with its files' modes set whatever the umask.
struct Tree(PathBuf);

impl Tree {
    fn file(&self, path: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
        let dest = self.0.join(path);
        let dir = dest.parent().expect("a file in a directory");
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::write(&dest, contents).with_context(|| format!("cannot write {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Bytes of everything but DEBIAN/, for Installed-Size.
    fn size(&self) -> anyhow::Result<u64> {
        fn walk(dir: &Path) -> std::io::Result<u64> {
            let mut total = 0;
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                total += if meta.is_dir() {
                    walk(&entry.path())?
                } else {
                    meta.len()
                };
            }
            Ok(total)
        }
        let mut total = 0;
        for entry in fs::read_dir(&self.0)? {
            let entry = entry?;
            if entry.file_name() != "DEBIAN" {
                total += if entry.metadata()?.is_dir() {
                    walk(&entry.path())?
                } else {
                    entry.metadata()?.len()
                };
            }
        }
        Ok(total)
    }
}

/// The release profile keeps line tables (for backtraces in development); the package
/// does without them, as Debian's packages do: 54 MB become about 9.
fn strip_debug(binary: &Path) -> anyhow::Result<()> {
    let is_elf = fs::read(binary).is_ok_and(|b| b.starts_with(b"\x7fELF"));
    if !is_elf {
        return Ok(());
    }
    let status = Command::new("strip").arg("--strip-debug").arg(binary).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("strip --strip-debug {} failed ({s})", binary.display()),
        Err(e) => {
            println!("warning: the binary keeps its debug sections: cannot run strip (binutils): {e}");
            Ok(())
        }
    }
}

fn architecture() -> anyhow::Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("cannot run dpkg --print-architecture: build the package on Debian or Ubuntu")?;
    let arch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || arch.is_empty() {
        bail!("dpkg --print-architecture printed nothing");
    }
    Ok(arch)
}

/// The shipped examples name /usr/local/bin (where `cargo xtask install` puts the
/// binary); the package's is /usr/bin.
fn examples_binary(text: &str, name: &str) -> anyhow::Result<String> {
    let from = format!("{}/bin/allowgate ", "/usr/local");
    // The timer starts the service and names no binary.
    if !text.contains(&from) && name.ends_with(".service") {
        bail!("packaging/{name} does not run {from}: point the package's copy elsewhere");
    }
    Ok(text.replace(&from, &format!("{PREFIX}/bin/allowgate ")))
}

/// The newest glibc symbol version the binary asks for, and libgcc_s if it links it:
/// what `Depends:` must say, read from the binary instead of guessed.
fn depends(binary: &[u8]) -> String {
    let mut newest: Option<(u32, u32)> = None;
    let marker = b"GLIBC_2.";
    let mut i = 0;
    while let Some(pos) = binary[i..].windows(marker.len()).position(|w| w == marker) {
        let start = i + pos + marker.len();
        let digits = |from: usize| {
            let end = binary[from..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(binary.len(), |e| from + e);
            (
                std::str::from_utf8(&binary[from..end])
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok()),
                end,
            )
        };
        let (minor, end) = digits(start);
        let patch = if binary.get(end) == Some(&b'.') {
            digits(end + 1).0
        } else {
            None
        };
        if let Some(minor) = minor {
            let v = (minor, patch.unwrap_or(0));
            if newest.is_none_or(|n| v > n) {
                newest = Some(v);
            }
        }
        i = start;
    }
    let mut deps = match newest {
        Some((minor, 0)) => vec![format!("libc6 (>= 2.{minor})")],
        Some((minor, patch)) => vec![format!("libc6 (>= 2.{minor}.{patch})")],
        None => vec!["libc6".to_string()],
    };
    if binary.windows(b"libgcc_s.so.1".len()).any(|w| w == b"libgcc_s.so.1") {
        deps.push("libgcc-s1".into());
    }
    deps.join(", ")
}

fn control(version: &str, arch: &str, installed_kib: u64, depends: &str) -> String {
    format!(
        "Package: allowgate\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: allowgate developers <allowgate@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Recommends: systemd\n\
         Suggests: nftables\n\
         Section: net\n\
         Priority: optional\n\
         Description: enforce a cloud service's published network allow list at the NIC\n \
         allowgate ships the catalog of Microsoft Defender for Cloud Apps' \"Network\n \
         requirements\" page: pick data centers (regions) and features, and an XDP\n \
         program (ingress) and a TC program (egress) pass exactly what the page lists,\n \
         plus the host's essentials and the operator's own additions, and drop the rest.\n \
         .\n \
         The service is installed but neither enabled nor started: edit\n \
         /etc/allowgate/config.toml, then `systemctl enable --now allowgate`.\n"
    )
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: allowgate\n\n\
     Files: *\n\
     Copyright: the allowgate developers\n\
     License: Apache-2.0\n \
     On Debian systems the full text of the Apache License 2.0 is in\n \
     /usr/share/common-licenses/Apache-2.0.\n"
        .to_string()
}

/// gzip -9n: no name or time stamp in the header, so the same page gives the same bytes.
fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("the writer thread")?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

// The maintainer scripts' systemd parts are what `dh_installsystemd --no-enable
// --no-start` writes (debhelper 13.11.4, Debian 12's: the snippets in
// /usr/share/debhelper/autoscripts/ of libdebhelper-perl, and the script that picks
// them, /usr/bin/dh_installsystemd), each marked `dh:` below. Two differences, each
// said where it is: prerm stops the service on remove, which dh writes only without
// --no-start; and postinst leaves out dh's `deb-systemd-helper unmask`, which undoes the
// masking that older debhelper's postrm did on remove and this package never did.

/// configure: the state directory, the enable state recorded for purge, the unit known
/// to systemd; on an upgrade, a running service restarted onto the new binary (it adopts
/// the pins, no gap). Never enable or start: that is the operator's call once the
/// config names interfaces and management.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    install -d -m 0700 /var/lib/allowgate
fi
# dh: postinst-systemd-dont-enable. An upgrade keeps the operator's choice (links made
# only if they were there); every configure records the links `enable` would make, so
# that `deb-systemd-helper purge` removes them, whoever made them.
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
    if deb-systemd-helper debian-installed 'allowgate.service'; then
        if deb-systemd-helper --quiet was-enabled 'allowgate.service'; then
            deb-systemd-helper enable 'allowgate.service' >/dev/null || true
        fi
    fi
    deb-systemd-helper update-state 'allowgate.service' >/dev/null || true
fi
# dh: postinst-systemd-restartnostart, with try-restart: $2 is the version configured
# before, empty on a first install.
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
    if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if [ -n "$2" ]; then
            deb-systemd-invoke try-restart 'allowgate.service' >/dev/null || true
        fi
    fi
fi
if [ "$1" = configure ] && [ -z "$2" ]; then
    echo "allowgate: installed, not enabled. Edit /etc/allowgate/config.toml (interfaces, regions," >&2
    echo "allowgate: [management] cidrs), check it with 'allowgate show', then 'systemctl enable --now allowgate'." >&2
fi
exit 0
"#;

/// remove: stop the daemon before its binary goes. Stopping keeps the pinned policy
/// enforced, as the unit documents; only a purge removes it. The pins' directory is
/// noted for the purge, which runs after the config is gone.
const PRERM: &str = r#"#!/bin/sh
set -e
# dh: prerm-systemd-restart (dh leaves it out with --no-start; a package that never
# starts the service still stops it before its binary goes).
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
    deb-systemd-invoke stop 'allowgate.service' >/dev/null || true
fi
if [ "$1" = remove ]; then
    bpffs_dir=$(sed -n 's/^[[:space:]]*bpffs_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' /etc/allowgate/config.toml 2>/dev/null | tail -n 1)
    if [ -d /var/lib/allowgate ]; then
        printf '%s\n' "${bpffs_dir:-/sys/fs/bpf/allowgate}" > /var/lib/allowgate/bpffs_dir.removed || true
    fi
    echo "allowgate: stopped; the last policy stays enforced (pinned) until 'apt purge allowgate'." >&2
fi
exit 0
"#;

/// remove: systemd forgets the unit. purge: the enable links (an operator's
/// `systemctl enable` included) and deb-systemd-helper's record of them, the pins (which
/// detaches the programs), the state and the config directory if nothing else is in it.
/// Only a directory under /sys/fs/bpf is removed.
const POSTRM: &str = r#"#!/bin/sh
set -e
# dh: postrm-systemd-reload-only
if [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
    systemctl --system daemon-reload >/dev/null || true
fi
# dh: postrm-systemd
if [ "$1" = "purge" ]; then
    if [ -x "/usr/bin/deb-systemd-helper" ]; then
        deb-systemd-helper purge 'allowgate.service' >/dev/null || true
    fi
fi
if [ "$1" = purge ]; then
    bpffs_dir=/sys/fs/bpf/allowgate
    if [ -r /var/lib/allowgate/bpffs_dir.removed ]; then
        bpffs_dir=$(head -n 1 /var/lib/allowgate/bpffs_dir.removed)
    fi
    case "$bpffs_dir" in
        /sys/fs/bpf/?*)
            case "$bpffs_dir" in
                *..*) echo "allowgate: not removing pins under $bpffs_dir (not a plain path)" >&2 ;;
                *)
                    if [ -d "$bpffs_dir" ]; then
                        rm -rf -- "$bpffs_dir"
                        echo "allowgate: removed the pinned policy $bpffs_dir: no longer enforcing" >&2
                    fi
                    ;;
            esac
            ;;
        *) echo "allowgate: not removing $bpffs_dir (not under /sys/fs/bpf)" >&2 ;;
    esac
    rm -rf /var/lib/allowgate
    rmdir --ignore-fail-on-non-empty /etc/allowgate 2>/dev/null || true
fi
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_names_the_newest_glibc_and_libgcc() {
        let bin = b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.17\0libgcc_s.so.1\0GLIBC_2.3.4\0";
        assert_eq!(depends(bin), "libc6 (>= 2.34), libgcc-s1");
        assert_eq!(depends(b"GLIBC_2.2.5"), "libc6 (>= 2.2.5)");
        assert_eq!(depends(b"static"), "libc6");
    }

    #[test]
    fn the_examples_run_the_packaged_binary() {
        let text = examples_binary(CATALOG_UPDATE_SERVICE, "allowgate-catalog-update.service").unwrap();
        assert!(text.contains("ExecStart=/usr/bin/allowgate catalog fetch "));
        assert!(!text.contains("/usr/local/bin"));
    }

    #[test]
    fn maintainer_scripts_are_valid_sh_and_never_start_the_service() {
        for (name, script) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
            let status = Command::new("sh").args(["-n", "-c", script]).status().unwrap();
            assert!(status.success(), "{name} is not valid sh");
            // What the scripts run, not what they tell the operator to run.
            let commands: String = script
                .lines()
                .filter(|l| !l.trim_start().starts_with("echo "))
                .collect();
            for forbidden in [
                "systemctl start",
                "systemctl enable",
                "systemctl restart ",
                "deb-systemd-invoke start",
                "deb-systemd-invoke restart",
                "allowgate daemon",
            ] {
                assert!(!commands.contains(forbidden), "{name} runs `{forbidden}`");
            }
        }
        assert!(!PRERM.contains("rm "), "prerm removes files");
    }

    /// What each dpkg call makes the scripts do: deb-systemd-helper, deb-systemd-invoke
    /// and systemctl are stubs that log their arguments (`was-enabled` and
    /// `debian-installed` answer as told), and every path the scripts touch is moved
    /// into a directory of the test's, /run/systemd/system (systemd runs) and
    /// /sys/fs/bpf included.
    struct Scripts {
        dir: tempfile::TempDir,
    }

    impl Scripts {
        fn new() -> Scripts {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::create_dir_all(dir.path().join("run-systemd")).unwrap();
            for stub in ["deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
                let path = bin.join(stub);
                fs::write(
                    &path,
                    format!(
                        "#!/bin/sh\necho \"{stub} $*\" >> {log}\n\
                         case \"$*\" in\n\
                         *was-enabled*) [ -e {d}/enabled ] ;;\n\
                         *debian-installed*) [ -e {d}/recorded ] ;;\n\
                         esac\n",
                        log = dir.path().join("log").display(),
                        d = dir.path().display()
                    ),
                )
                .unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
            Scripts { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Runs `script` with `args`; returns the stubs' calls.
        fn run(&self, script: &str, args: &[&str]) -> Vec<String> {
            let d = self.dir.path().display().to_string();
            let script = script
                .replace("/usr/bin/deb-systemd-helper", &format!("{d}/bin/deb-systemd-helper"))
                .replace("/run/systemd/system", &format!("{d}/run-systemd"))
                .replace("/var/lib/allowgate", &format!("{d}/state"))
                .replace("/etc/allowgate", &format!("{d}/etc"))
                .replace("/sys/fs/bpf", &format!("{d}/bpf"));
            let _ = fs::remove_file(self.path("log"));
            let out = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .arg("script")
                .args(args)
                .env("PATH", format!("{d}/bin:{}", std::env::var("PATH").unwrap_or_default()))
                .env_remove("DPKG_ROOT")
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            fs::read_to_string(self.path("log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    #[test]
    fn the_scripts_enable_nothing_restart_only_what_runs_and_purge_the_links() {
        let s = Scripts::new();
        // A first install: the links enable would make are recorded (so purge finds
        // them), nothing is enabled, started or restarted.
        let calls = s.run(POSTINST, &["configure", ""]);
        assert_eq!(
            calls,
            [
                "deb-systemd-helper debian-installed allowgate.service",
                "deb-systemd-helper update-state allowgate.service",
                "systemctl --system daemon-reload",
            ],
            "first install"
        );
        assert!(s.path("state").is_dir());

        // An upgrade: a unit the operator enabled keeps its links, one they did not
        // stays disabled; a running service is restarted (try-restart starts nothing).
        fs::write(s.path("recorded"), "").unwrap();
        for enabled in [true, false] {
            if enabled {
                fs::write(s.path("enabled"), "").unwrap();
            } else {
                fs::remove_file(s.path("enabled")).unwrap();
            }
            let calls = s.run(POSTINST, &["configure", "0.0.9"]);
            assert_eq!(
                calls.iter().any(|c| c == "deb-systemd-helper enable allowgate.service"),
                enabled,
                "upgrade, enabled before: {enabled}: {calls:?}"
            );
            assert_eq!(
                calls.last().map(String::as_str),
                Some("deb-systemd-invoke try-restart allowgate.service"),
                "{calls:?}"
            );
        }

        // Remove stops it; an upgrade's prerm leaves it running for postinst's restart.
        assert_eq!(s.run(PRERM, &["remove"]), ["deb-systemd-invoke stop allowgate.service"]);
        assert_eq!(s.run(PRERM, &["upgrade", "0.2.0"]), Vec::<String>::new());
        assert_eq!(s.run(POSTRM, &["remove"]), ["systemctl --system daemon-reload"]);

        // Purge: the recorded links, the pins noted at remove, the state, the config.
        let pins = s.path("bpf/allowgate");
        fs::create_dir_all(pins.join("links")).unwrap();
        fs::write(s.path("state/bpffs_dir.removed"), format!("{}\n", pins.display())).unwrap();
        fs::create_dir_all(s.path("etc")).unwrap();
        assert_eq!(
            s.run(POSTRM, &["purge"]),
            ["deb-systemd-helper purge allowgate.service"]
        );
        for gone in ["bpf/allowgate", "state", "etc"] {
            assert!(!s.path(gone).exists(), "{gone} is left after purge");
        }
        // Pins noted outside bpffs are not removed.
        fs::create_dir_all(s.path("state")).unwrap();
        fs::create_dir_all(s.path("elsewhere")).unwrap();
        fs::write(
            s.path("state/bpffs_dir.removed"),
            format!("{}\n", s.path("elsewhere").display()),
        )
        .unwrap();
        s.run(POSTRM, &["purge"]);
        assert!(s.path("elsewhere").is_dir());
    }

    /// The whole package, from a stand-in binary: the files, their modes, the unit's
    /// ExecStart, the conffile, the man pages (as `man -l` would read them).
    #[test]
    fn the_package_holds_what_an_operator_needs() {
        if Command::new("dpkg-deb").arg("--version").output().is_err() {
            eprintln!("skipped: no dpkg-deb here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("allowgate");
        fs::write(&bin, b"stand-in GLIBC_2.34\0libgcc_s.so.1\0").unwrap();
        let deb = build(&bin, &dir.path().join("out")).unwrap();
        let list = Command::new("dpkg-deb").arg("--contents").arg(&deb).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        for (mode, path) in [
            ("-rwxr-xr-x", "./usr/bin/allowgate"),
            ("-rw-r--r--", "./usr/lib/systemd/system/allowgate.service"),
            ("-rw-r-----", "./etc/allowgate/config.toml"),
            ("-rw-r--r--", "./usr/share/man/man8/allowgate.8.gz"),
            ("-rw-r--r--", "./usr/share/man/man8/allowgate-status.8.gz"),
            ("-rw-r--r--", "./usr/share/man/man5/allowgate.toml.5.gz"),
            ("-rw-r--r--", "./usr/share/bash-completion/completions/allowgate"),
            ("-rw-r--r--", "./usr/share/zsh/vendor-completions/_allowgate"),
            ("-rw-r--r--", "./usr/share/fish/vendor_completions.d/allowgate.fish"),
            ("-rw-r--r--", "./usr/share/allowgate/network-requirements-2019-11.md"),
            (
                "-rw-r--r--",
                "./usr/share/doc/allowgate/examples/allowgate-catalog-update.timer",
            ),
            ("-rw-r--r--", "./usr/share/doc/allowgate/examples/allowgate.rules.yml"),
        ] {
            assert!(
                list.lines()
                    .any(|l| l.starts_with(mode) && l.contains(" root/root ") && l.ends_with(path)),
                "{path} ({mode}, root/root) missing:\n{list}"
            );
        }
        let field = |name: &str| {
            let out = Command::new("dpkg-deb")
                .arg("--field")
                .arg(&deb)
                .arg(name)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(field("Package"), "allowgate");
        assert_eq!(field("Depends"), "libc6 (>= 2.34), libgcc-s1");
        let extract = dir.path().join("x");
        let ok = Command::new("dpkg-deb")
            .arg("--raw-extract")
            .arg(&deb)
            .arg(&extract)
            .status()
            .unwrap();
        assert!(ok.success());
        assert_eq!(
            fs::read_to_string(extract.join("DEBIAN/conffiles")).unwrap(),
            "/etc/allowgate/config.toml\n"
        );
        let unit = fs::read_to_string(extract.join("usr/lib/systemd/system/allowgate.service")).unwrap();
        assert!(unit.contains("\nExecStart=/usr/bin/allowgate daemon --config /etc/allowgate/config.toml\n"));
        // No staging directory left beside the .deb.
        let left: Vec<_> = fs::read_dir(dir.path().join("out"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(left, std::slice::from_ref(&deb), "left beside the package: {left:?}");
    }
}

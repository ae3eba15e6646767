//! The one way tests and xtask write a daemon's config: a builder that renders the TOML
//! an operator would write (top-level keys, then one table per section, then the
//! `[[allow]]` entries), every value quoted by one function. A key a test needs is added
//! here once, not spelled again in each test's `format!`.
//!
//! ```
//! use testkit::config::{Allow, ConfigBuilder};
//! let text = ConfigBuilder::new(&["veth0"])
//!     .mode("enforce")
//!     .regions(&["eu1"])
//!     .dns_servers(&["192.0.2.2"])
//!     .management(&["192.0.2.0/24"])
//!     .allow(Allow::egress("198.51.100.10/32", "tcp").ports(&["443"]))
//!     .render();
//! assert!(text.contains("regions = [\"eu1\"]"));
//! ```

use std::path::Path;

/// A value as TOML writes it.
pub trait Toml {
    fn toml(&self) -> String;
}

impl Toml for str {
    fn toml(&self) -> String {
        // A JSON string is a TOML basic string: the same escapes for quotes,
        // backslashes and control characters.
        serde_json::to_string(self).expect("a string serializes")
    }
}

impl Toml for String {
    fn toml(&self) -> String {
        self.as_str().toml()
    }
}

impl Toml for Path {
    fn toml(&self) -> String {
        self.to_str().expect("a UTF-8 path").toml()
    }
}

impl Toml for std::path::PathBuf {
    fn toml(&self) -> String {
        self.as_path().toml()
    }
}

impl Toml for bool {
    fn toml(&self) -> String {
        self.to_string()
    }
}

macro_rules! toml_number {
    ($($t:ty),*) => {$(
        impl Toml for $t {
            fn toml(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
toml_number!(u8, u16, u32, u64, usize, i64);

impl<T: Toml> Toml for [T] {
    fn toml(&self) -> String {
        format!("[{}]", self.iter().map(Toml::toml).collect::<Vec<_>>().join(", "))
    }
}

impl<T: Toml> Toml for Vec<T> {
    fn toml(&self) -> String {
        self.as_slice().toml()
    }
}

impl<T: Toml + ?Sized> Toml for &T {
    fn toml(&self) -> String {
        (**self).toml()
    }
}

/// One `[[allow]]` entry.
#[derive(Clone, Debug)]
pub struct Allow {
    cidr: String,
    direction: &'static str,
    proto: String,
    ports: Vec<String>,
    comment: Option<String>,
}

impl Allow {
    pub fn egress(cidr: &str, proto: &str) -> Allow {
        Allow::new(cidr, "egress", proto)
    }

    pub fn ingress(cidr: &str, proto: &str) -> Allow {
        Allow::new(cidr, "ingress", proto)
    }

    fn new(cidr: &str, direction: &'static str, proto: &str) -> Allow {
        Allow {
            cidr: cidr.to_string(),
            direction,
            proto: proto.to_string(),
            ports: Vec::new(),
            comment: None,
        }
    }

    /// Ports as the config spells them: `"443"` is the number, `"7000-7001"` a range.
    pub fn ports(mut self, ports: &[&str]) -> Allow {
        self.ports = ports.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn comment(mut self, comment: &str) -> Allow {
        self.comment = Some(comment.to_string());
        self
    }

    fn render(&self, out: &mut String) {
        out.push_str("\n[[allow]]\n");
        out.push_str(&format!("cidr = {}\n", self.cidr.toml()));
        out.push_str(&format!("direction = {}\n", self.direction.toml()));
        out.push_str(&format!("proto = {}\n", self.proto.toml()));
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|p| match p.parse::<u16>() {
                    Ok(n) => n.to_string(),
                    Err(_) => p.toml(),
                })
                .collect();
            out.push_str(&format!("ports = [{}]\n", ports.join(", ")));
        }
        if let Some(c) = &self.comment {
            out.push_str(&format!("comment = {}\n", c.toml()));
        }
    }
}

/// A config, key by key. Setting a key again replaces its value in place.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    comment: Vec<String>,
    top: Vec<(String, String)>,
    raw: Vec<String>,
    sections: Vec<(String, Vec<(String, String)>)>,
    allows: Vec<Allow>,
    tail: Vec<String>,
}

impl ConfigBuilder {
    /// A config for `interfaces`, with nothing else said.
    pub fn new(interfaces: &[&str]) -> ConfigBuilder {
        ConfigBuilder::default().key("interfaces", interfaces)
    }

    /// A `# ` comment opening the file (one per line of `text`).
    pub fn comment(mut self, text: &str) -> ConfigBuilder {
        self.comment
            .extend(text.lines().map(|l| format!("# {l}").trim_end().to_string()));
        self
    }

    /// A top-level key.
    pub fn key(mut self, key: &str, value: impl Toml) -> ConfigBuilder {
        set(&mut self.top, key, value.toml());
        self
    }

    /// A key of the `[section]` table.
    pub fn set(mut self, section: &str, key: &str, value: impl Toml) -> ConfigBuilder {
        let at = match self.sections.iter().position(|(s, _)| s == section) {
            Some(at) => at,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        set(&mut self.sections[at].1, key, value.toml());
        self
    }

    /// Lines written verbatim after the top-level keys, before the first table (a key
    /// a test spells itself, or tables of its own).
    pub fn raw(mut self, text: &str) -> ConfigBuilder {
        if !text.trim().is_empty() {
            self.raw.push(text.trim_end().to_string());
        }
        self
    }

    /// Lines written verbatim at the end of the file.
    pub fn tail(mut self, text: &str) -> ConfigBuilder {
        if !text.trim().is_empty() {
            self.tail.push(text.trim_end().to_string());
        }
        self
    }

    pub fn allow(mut self, allow: Allow) -> ConfigBuilder {
        self.allows.push(allow);
        self
    }

    pub fn mode(self, mode: &str) -> ConfigBuilder {
        self.key("mode", mode)
    }

    pub fn regions(self, regions: &[&str]) -> ConfigBuilder {
        self.key("regions", regions)
    }

    pub fn features(self, features: &[&str]) -> ConfigBuilder {
        self.key("features", features)
    }

    /// `catalog`, the page the daemon reads instead of the built-in one.
    pub fn catalog(self, page: &Path) -> ConfigBuilder {
        self.key("catalog", page)
    }

    /// `bpffs_dir`, `state_dir` and `socket`: where a test's daemon keeps its pins,
    /// state and control socket.
    pub fn homes(self, pins: &Path, state: &Path, socket: &Path) -> ConfigBuilder {
        self.key("bpffs_dir", pins)
            .key("state_dir", state)
            .key("socket", socket)
    }

    /// `[essentials] dns_servers`.
    pub fn dns_servers(self, servers: &[&str]) -> ConfigBuilder {
        self.set("essentials", "dns_servers", servers)
    }

    /// `[management] cidrs`.
    pub fn management(self, cidrs: &[&str]) -> ConfigBuilder {
        self.set("management", "cidrs", cidrs)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.comment {
            out.push_str(line);
            out.push('\n');
        }
        for (k, v) in &self.top {
            out.push_str(&format!("{k} = {v}\n"));
        }
        for raw in &self.raw {
            out.push_str(raw);
            out.push('\n');
        }
        for (name, keys) in &self.sections {
            out.push_str(&format!("\n[{name}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        for allow in &self.allows {
            allow.render(&mut out);
        }
        for tail in &self.tail {
            out.push('\n');
            out.push_str(tail);
            out.push('\n');
        }
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.render()).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

fn set(keys: &mut Vec<(String, String)>, key: &str, value: String) {
    match keys.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => keys.push((key.to_string(), value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allowgate::{catalog::Catalog, policy::config::Config};

    /// What the builder writes, the daemon's own parser reads back as meant.
    #[test]
    fn a_built_config_parses_to_what_was_set() {
        let text = ConfigBuilder::new(&["veth0"])
            .comment("a test\nof two lines")
            .mode("enforce")
            .regions(&["eu1"])
            .regions(&["eu1", "eu2"])
            .features(&["portal", "siem"])
            .key("drop_log_interval", 1u64)
            .homes(Path::new("/tmp/p \"q\""), Path::new("/tmp/s"), Path::new("/tmp/c.sock"))
            .dns_servers(&["192.0.2.2"])
            .set("dns", "learn", false)
            .management(&["192.0.2.0/24"])
            .allow(Allow::egress("198.51.100.10/32", "tcp").ports(&["443"]).comment("one"))
            .allow(Allow::ingress("2001:db8:b::/48", "udp").ports(&["7000-7001"]))
            .render();
        assert!(text.starts_with("# a test\n# of two lines\n"), "{text}");
        assert_eq!(text.matches("regions =").count(), 1, "{text}");
        let config = Config::parse(&text, "built.toml", &Catalog::builtin()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.interfaces, ["veth0"]);
        assert_eq!(config.regions, ["eu1", "eu2"]);
        assert_eq!(config.bpffs_dir, Path::new("/tmp/p \"q\""));
        assert_eq!(config.socket, Path::new("/tmp/c.sock"));
        assert!(!config.dns.learn);
        assert_eq!(
            config.essentials.dns_servers,
            ["192.0.2.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(config.allow.len(), 2);
        assert_eq!(config.allow[0].comment.as_deref(), Some("one"));
        assert_eq!(config.allow[1].ports.len(), 1);
        assert_eq!(config.drop_log_interval, 1);
    }
}

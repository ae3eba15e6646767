//! From the file as written to a validated `Config`: each section's check, every error
//! one line that names the key and the line it is on.

use std::{
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use toml::Spanned;

use super::{raw::*, *};
use crate::catalog::{Catalog, Direction, Feature, PortRange, Proto};

/// Turns byte offsets into 1-based line numbers for one file. The line starts are
/// found once: counting newlines per lookup made parsing quadratic in `[[allow]]`
/// entries (100k entries took minutes).
struct Lines<'a> {
    path: &'a str,
    /// Byte offset of each line after the first.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(path: &'a str, text: &str) -> Lines<'a> {
        let starts = text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Lines { path, starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset) + 1
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: self.line_of(span.start),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads and validates the config at `path` against `catalog`'s regions.
    pub fn load(path: &Path, catalog: &Catalog) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string(), catalog)
    }

    /// The catalog sources a config names, read before the full parse so regions can
    /// be checked against the right catalog. Relative paths are made relative to
    /// `config_dir`. A value of the wrong type names nothing here; the full parse
    /// reports it.
    pub fn catalog_paths(text: &str, config_dir: &Path) -> Vec<PathBuf> {
        let Ok(table) = toml::from_str::<toml::Table>(text) else {
            return Vec::new();
        };
        let paths: Vec<PathBuf> = match table.get("catalog") {
            Some(toml::Value::String(s)) => vec![PathBuf::from(s)],
            Some(toml::Value::Array(list)) => list.iter().filter_map(|v| v.as_str()).map(PathBuf::from).collect(),
            _ => Vec::new(),
        };
        paths.into_iter().map(|p| config_dir.join(p)).collect()
    }

    /// `max_shrink` and `max_catalog_age` of a config, read on their own (for `catalog
    /// fetch`, which must work when the catalog the config names is broken); a key that
    /// is missing or not valid gives its default here, and the full parse reports it.
    pub fn catalog_limits(text: &str) -> (u8, u32) {
        let table = toml::from_str::<toml::Table>(text).unwrap_or_default();
        let shrink = table
            .get("max_shrink")
            .and_then(toml::Value::as_integer)
            .and_then(|v| u8::try_from(v).ok())
            .filter(|p| *p <= 100)
            .unwrap_or(DEFAULT_MAX_SHRINK);
        let age = table
            .get("max_catalog_age")
            .and_then(toml::Value::as_integer)
            .and_then(parse_catalog_age)
            .unwrap_or(DEFAULT_MAX_CATALOG_AGE);
        (shrink, age)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &str, catalog: &Catalog) -> Result<Config, ConfigError> {
        let lines = Lines::new(path, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| lines.line_of(s.start)).unwrap_or(1);
            ConfigError::Invalid {
                path: path.to_string(),
                line,
                message: one_line(e.message()),
            }
        })?;
        let defaults = Config::default();
        // One function per section, checked in a fixed order: with several mistakes, the
        // one named is always the same.
        Ok(Config {
            interfaces: parse_interfaces(&raw.interfaces, &lines)?,
            mode: match &raw.mode {
                None => defaults.mode,
                Some(m) => m
                    .get_ref()
                    .parse()
                    .map_err(|e: String| lines.error(m.span(), format!("mode: {e}")))?,
            },
            regions: parse_regions(&raw.regions, catalog, &lines)?,
            socket: raw.socket.unwrap_or(defaults.socket),
            socket_group: raw.socket_group,
            state_dir: raw.state_dir.unwrap_or(defaults.state_dir),
            bpffs_dir: raw.bpffs_dir.unwrap_or(defaults.bpffs_dir),
            catalog: raw.catalog.map(RawCatalog::into_paths).unwrap_or_default(),
            proxy_regions: match &raw.proxy_regions {
                None => None,
                Some(list) => Some(parse_proxy_regions(list, catalog, &lines)?),
            },
            max_shrink: match &raw.max_shrink {
                None => defaults.max_shrink,
                Some(v) => parse_max_shrink(v, &lines)?,
            },
            max_catalog_age: match &raw.max_catalog_age {
                None => defaults.max_catalog_age,
                Some(v) => parse_catalog_age(*v.get_ref()).ok_or_else(|| {
                    lines.error(
                        v.span(),
                        format!(
                            "max_catalog_age: {} is not a number of days (0, never, to {MAX_CATALOG_AGE})",
                            v.get_ref()
                        ),
                    )
                })?,
            },
            features: match &raw.features {
                None => defaults.features.clone(),
                Some(list) => parse_features(list, &lines)?,
            },
            essentials: parse_essentials(&raw.essentials, &lines)?,
            management: Management {
                cidrs: parse_cidrs(&raw.management.cidrs, "management.cidrs", &lines)?,
                ports: match &raw.management.ports {
                    None => defaults.management.ports.clone(),
                    Some(p) => parse_ports(p, "management.ports", &lines)?,
                },
            },
            allow: raw
                .allow
                .iter()
                .enumerate()
                .map(|(i, entry)| parse_allow(entry, i, &lines))
                .collect::<Result<_, _>>()?,
            app_connector_ports: match &raw.feature_ports.app_connector {
                None => defaults.app_connector_ports.clone(),
                Some(p) => parse_ports(p, "feature_ports.app-connector", &lines)?,
            },
            dlp_ports: match &raw.feature_ports.dlp {
                None => defaults.dlp_ports.clone(),
                Some(p) => parse_ports(p, "feature_ports.dlp", &lines)?,
            },
            log_collector: LogCollector {
                sources: parse_cidrs(&raw.log_collector.sources, "log_collector.sources", &lines)?,
                ftp_passive_ports: parse_ports(
                    &raw.log_collector.ftp_passive_ports,
                    "log_collector.ftp_passive_ports",
                    &lines,
                )?,
            },
            metrics: match &raw.metrics {
                None => None,
                Some(m) => Some(parse_metrics(m, &lines)?),
            },
            drop_log_interval: match &raw.drop_log_interval {
                None => DEFAULT_DROP_LOG_INTERVAL,
                Some(v) if (1..=86_400).contains(v.get_ref()) => *v.get_ref(),
                Some(v) => return Err(lines.error(v.span(), "drop_log_interval: 1 to 86400 seconds")),
            },
            dns: parse_dns(&raw.dns, &lines)?,
            state: parse_state(&raw.state, &lines)?,
            xdp_mode: parse_xdp_mode(&raw.xdp_mode, &lines)?,
            xdp_priority: match &raw.xdp_priority {
                None => DEFAULT_XDP_PRIORITY,
                Some(p) => u32::try_from(*p.get_ref())
                    .map_err(|_| lines.error(p.span(), "xdp_priority: 0 to 4294967295 (lowest runs first)"))?,
            },
        })
    }

    /// The DNS servers the `dns` essential allows: the configured ones, else the host's.
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        if !self.essentials.dns_servers.is_empty() {
            return self.essentials.dns_servers.clone();
        }
        host_resolvers(Path::new(RESOLV_CONF), Path::new(RESOLVED_UPSTREAM))
    }
}

/// `interfaces`: names the kernel can take, each once.
fn parse_interfaces(raw: &[Spanned<String>], lines: &Lines) -> Result<Vec<String>, ConfigError> {
    let mut interfaces = Vec::new();
    for name in raw {
        let n = name.get_ref();
        if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ']) {
            return Err(lines.error(name.span(), format!("interfaces: `{n}` is not an interface name")));
        }
        if interfaces.contains(n) {
            return Err(lines.error(name.span(), format!("interfaces: `{n}` is listed twice")));
        }
        interfaces.push(n.clone());
    }
    Ok(interfaces)
}

/// `regions`: each a region of the catalog, kept as the catalog spells it.
fn parse_regions(raw: &[Spanned<String>], catalog: &Catalog, lines: &Lines) -> Result<Vec<String>, ConfigError> {
    let mut regions = Vec::new();
    for r in raw {
        let region = catalog
            .region(r.get_ref())
            .map_err(|e| lines.error(r.span(), format!("regions: {e}")))?;
        if !regions.contains(&region.id) {
            regions.push(region.id.clone());
        }
    }
    Ok(regions)
}

/// `proxy_regions`: Azure regions of the catalog only.
fn parse_proxy_regions(raw: &[Spanned<String>], catalog: &Catalog, lines: &Lines) -> Result<Vec<String>, ConfigError> {
    let mut ids = Vec::new();
    for r in raw {
        let region = catalog
            .region(r.get_ref())
            .map_err(|e| lines.error(r.span(), format!("proxy_regions: {e}")))?;
        if region.kind != crate::catalog::RegionKind::AzureRegion {
            return Err(lines.error(
                r.span(),
                format!(
                    "proxy_regions: `{}` is not a proxy region (an Azure region such as `westeurope`); `allowgate regions` lists them",
                    r.get_ref()
                ),
            ));
        }
        if !ids.contains(&region.id) {
            ids.push(region.id.clone());
        }
    }
    Ok(ids)
}

fn parse_max_shrink(v: &Spanned<i64>, lines: &Lines) -> Result<u8, ConfigError> {
    u8::try_from(*v.get_ref()).ok().filter(|p| *p <= 100).ok_or_else(|| {
        lines.error(
            v.span(),
            format!("max_shrink: {} is not a percentage (0 to 100)", v.get_ref()),
        )
    })
}

fn parse_features(list: &[Spanned<String>], lines: &Lines) -> Result<Vec<Feature>, ConfigError> {
    let mut features = Vec::new();
    for f in list {
        let feature: Feature = f
            .get_ref()
            .parse()
            .map_err(|e| lines.error(f.span(), format!("features: {e}")))?;
        if !features.contains(&feature) {
            features.push(feature);
        }
    }
    Ok(features)
}

/// `[essentials]`: the switches, the resolvers the `dns` essential allows and the
/// extra ethertypes.
fn parse_essentials(essentials: &RawEssentials, lines: &Lines) -> Result<Essentials, ConfigError> {
    let mut dns_servers = Vec::new();
    for s in &essentials.dns_servers {
        let ip: IpAddr = s.get_ref().trim().parse().map_err(|_| {
            lines.error(
                s.span(),
                format!("essentials.dns_servers: `{}` is not an IP address", s.get_ref()),
            )
        })?;
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Err(lines.error(
                s.span(),
                format!(
                    "essentials.dns_servers: `{}` is an IPv4-mapped IPv6 address, which never appears on the wire here: write {v4}",
                    s.get_ref()
                ),
            ));
        }
        dns_servers.push(ip);
    }
    let mut ethertypes = Vec::new();
    for e in &essentials.ethertypes {
        let value =
            parse_ethertype(e.get_ref()).map_err(|m| lines.error(e.span(), format!("essentials.ethertypes: {m}")))?;
        if !ethertypes.contains(&value) {
            ethertypes.push(value);
        }
    }
    if ethertypes.len() > allowgate_ebpf::MAX_ETHERTYPES {
        let span = essentials.ethertypes[allowgate_ebpf::MAX_ETHERTYPES].span();
        return Err(lines.error(
            span,
            format!(
                "essentials.ethertypes: at most {} ethertypes can be listed",
                allowgate_ebpf::MAX_ETHERTYPES
            ),
        ));
    }
    Ok(Essentials {
        arp: essentials.arp,
        ipv6_nd: essentials.ipv6_nd,
        icmp_errors: essentials.icmp_errors,
        dhcp: essentials.dhcp,
        dns: essentials.dns,
        dns_servers,
        ethertypes,
    })
}

fn parse_metrics(m: &Spanned<String>, lines: &Lines) -> Result<SocketAddr, ConfigError> {
    m.get_ref().parse::<SocketAddr>().map_err(|_| {
        lines.error(
            m.span(),
            format!(
                "metrics: `{}` is not an address:port such as 127.0.0.1:9464",
                m.get_ref()
            ),
        )
    })
}

/// `[dns]`: the learner's TTL bounds, its table size and the refresh interval.
fn parse_xdp_mode(raw: &Option<Spanned<String>>, lines: &Lines) -> Result<XdpPlacement, ConfigError> {
    let Some(m) = raw else {
        return Ok(XdpPlacement::Auto);
    };
    Ok(match m.get_ref().as_str() {
        "auto" => XdpPlacement::Auto,
        "native" => XdpPlacement::Native,
        "generic" => XdpPlacement::Generic,
        "dispatcher" => XdpPlacement::Dispatcher,
        other => {
            return Err(lines.error(
                m.span(),
                format!("xdp_mode: `{other}` is none of auto, native, generic, dispatcher"),
            ));
        }
    })
}

fn parse_dns(raw_dns: &RawDns, lines: &Lines) -> Result<DnsSettings, ConfigError> {
    if raw_dns.ttl_floor.get_ref() > raw_dns.ttl_max.get_ref() {
        return Err(lines.error(raw_dns.ttl_floor.span(), "dns.ttl_floor: larger than dns.ttl_max"));
    }
    let max_learned = *raw_dns.max_learned.get_ref();
    if max_learned == 0 || max_learned > u64::from(allowgate_ebpf::DYN_MAX) {
        return Err(lines.error(
            raw_dns.max_learned.span(),
            format!(
                "dns.max_learned: 1 to {} (the size of the data plane's table)",
                allowgate_ebpf::DYN_MAX
            ),
        ));
    }
    if *raw_dns.refresh.get_ref() == 0 {
        return Err(lines.error(raw_dns.refresh.span(), "dns.refresh: at least 1 second"));
    }
    let give_back = match &raw_dns.give_back {
        None => GiveBack::default(),
        Some(v) => match GiveBack::NAMES.iter().position(|n| *n == v.get_ref().as_str()) {
            Some(0) => GiveBack::Auto,
            Some(1) => GiveBack::LiveFrames,
            Some(2) => GiveBack::Loopback,
            Some(_) => GiveBack::None,
            None => {
                return Err(lines.error(
                    v.span(),
                    format!(
                        "dns.give_back: unknown path `{}`: use {}",
                        v.get_ref(),
                        GiveBack::NAMES.map(|n| format!("`{n}`")).join(", ")
                    ),
                ));
            }
        },
    };
    Ok(DnsSettings {
        learn: raw_dns.learn,
        give_back,
        ttl_floor: *raw_dns.ttl_floor.get_ref(),
        ttl_grace: *raw_dns.ttl_grace.get_ref(),
        ttl_max: *raw_dns.ttl_max.get_ref(),
        max_learned: max_learned as usize,
        refresh: *raw_dns.refresh.get_ref(),
    })
}

fn parse_state(raw: &RawState, lines: &Lines) -> Result<StateSettings, ConfigError> {
    let mode = match &raw.mode {
        None => StateMode::default(),
        Some(m) => match m.get_ref().as_str() {
            "stateful" => StateMode::Stateful,
            "stateless" => StateMode::Stateless,
            other => {
                return Err(lines.error(
                    m.span(),
                    format!("state.mode: unknown mode `{other}`: use `stateful` or `stateless`"),
                ));
            }
        },
    };
    let d = FlowTimeouts::default();
    let t = &raw.timeouts;
    let pick = |value: &Option<Spanned<i64>>, key: &str, default: u32| -> Result<u32, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if (1..=MAX_FLOW_TIMEOUT).contains(v.get_ref()) => Ok(*v.get_ref() as u32),
            Some(v) => Err(lines.error(
                v.span(),
                format!("state.timeouts.{key}: 1 to {MAX_FLOW_TIMEOUT} seconds"),
            )),
        }
    };
    let timeouts = FlowTimeouts {
        tcp_syn_sent: pick(&t.tcp_syn_sent, "tcp_syn_sent", d.tcp_syn_sent)?,
        tcp_established: pick(&t.tcp_established, "tcp_established", d.tcp_established)?,
        tcp_closing: pick(&t.tcp_closing, "tcp_closing", d.tcp_closing)?,
        tcp_close: pick(&t.tcp_close, "tcp_close", d.tcp_close)?,
        udp: pick(&t.udp, "udp", d.udp)?,
        udp_stream: pick(&t.udp_stream, "udp_stream", d.udp_stream)?,
        icmp: pick(&t.icmp, "icmp", d.icmp)?,
        other: pick(&t.other, "other", d.other)?,
    };
    let max_flows = match &raw.max_flows {
        None => default_max_flows(),
        Some(v) if (i64::from(MIN_MAX_FLOWS)..=i64::from(MAX_MAX_FLOWS)).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            return Err(lines.error(
                v.span(),
                format!("state.max_flows: {MIN_MAX_FLOWS} to {MAX_MAX_FLOWS} flows per address family"),
            ));
        }
    };
    Ok(StateSettings {
        mode,
        timeouts,
        liberal: raw.liberal.unwrap_or(false),
        max_flows,
    })
}

/// The nameservers of `resolv_conf`. When it lists only loopback stubs (systemd-resolved's
/// 127.0.0.53), the upstream servers in `upstream` are the ones packets go to.
pub fn host_resolvers(resolv_conf: &Path, upstream: &Path) -> Vec<IpAddr> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let servers = read(resolv_conf);
    if !servers.is_empty() && servers.iter().all(|s| s.is_loopback()) {
        let real = read(upstream);
        if !real.is_empty() {
            return real;
        }
    }
    servers
}

pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && let Some(addr) = words.next()
            // A scoped IPv6 address (fe80::1%eth0) names its interface after `%`.
            && let Ok(ip) = addr.split('%').next().unwrap_or(addr).parse::<IpAddr>()
            && !servers.contains(&ip)
        {
            servers.push(ip);
        }
    }
    servers
}

/// toml's messages can span lines; a user gets one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `max_catalog_age` in days, when it is one.
fn parse_catalog_age(days: i64) -> Option<u32> {
    u32::try_from(days).ok().filter(|d| *d <= MAX_CATALOG_AGE)
}

/// A CIDR or a bare address (a /32 or /128). Host bits set is an error: `10.0.0.1/8`
/// is more likely a typo than a wish for 10.0.0.0/8.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Err(format!("`{text}` is not a CIDR (such as 192.0.2.0/24) or an address")),
        },
    };
    if net.trunc() != net {
        return Err(format!("`{text}` has host bits set: did you mean {}?", net.trunc()));
    }
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        // The data plane drops every v4-mapped address on the wire (a way around
        // IPv4 rules); a rule on one could never match anything.
        let len = v6.prefix_len().saturating_sub(96);
        return Err(format!(
            "`{text}` is an IPv4-mapped IPv6 address, which never appears on the wire here: write the IPv4 form, {}",
            if v6.prefix_len() >= 96 {
                IpNet::new(IpAddr::V4(v4), len)
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            } else {
                v4.to_string()
            }
        ));
    }
    Ok(net)
}

fn parse_cidrs(list: &[Spanned<String>], key: &str, lines: &Lines) -> Result<Vec<IpNet>, ConfigError> {
    parse_list(list, key, lines, |c| parse_cidr(c))
}

/// Each item of `list` through `parse`, duplicates dropped; an error names `key` and
/// the item's line.
fn parse_list<R, T: PartialEq>(
    list: &[Spanned<R>],
    key: &str,
    lines: &Lines,
    parse: impl Fn(&R) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    let mut out = Vec::new();
    for item in list {
        let value = parse(item.get_ref()).map_err(|m| lines.error(item.span(), format!("{key}: {m}")))?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

fn parse_port(raw: &RawPort) -> Result<PortRange, String> {
    match raw {
        RawPort::Number(n) => u16::try_from(*n)
            .map(PortRange::single)
            .map_err(|_| format!("{n} is not a port (0-65535)")),
        RawPort::Text(s) => s.parse(),
    }
}

fn parse_ports(list: &[Spanned<RawPort>], key: &str, lines: &Lines) -> Result<Vec<PortRange>, ConfigError> {
    parse_list(list, key, lines, parse_port)
}

fn parse_ethertype(raw: &RawEthertype) -> Result<u16, String> {
    let value = match raw {
        RawEthertype::Number(n) => u16::try_from(*n).map_err(|_| format!("{n} is not an ethertype (0x0600-0xffff)"))?,
        RawEthertype::Text(s) => {
            let hex = s.trim().trim_start_matches("0x").trim_start_matches("0X");
            u16::from_str_radix(hex, 16).map_err(|_| format!("`{s}` is not an ethertype such as \"0x88cc\""))?
        }
    };
    match value {
        0x0800 | 0x86dd => Err(format!(
            "0x{value:04x} is IP, which the policy judges; list only non-IP ethertypes"
        )),
        0x0806 => Err("0x0806 is ARP: use essentials.arp".to_string()),
        0x8100 | 0x88a8 => Err(format!("0x{value:04x} is a VLAN tag, which the filter looks through")),
        v if v < 0x0600 => Err(format!("0x{v:04x} is a frame length, not an ethertype (0x0600-0xffff)")),
        v => Ok(v),
    }
}

fn parse_allow(entry: &Spanned<RawAllow>, index: usize, lines: &Lines) -> Result<AllowEntry, ConfigError> {
    let key = format!("allow[{index}]");
    let raw = entry.get_ref();
    let cidr = parse_cidr(raw.cidr.get_ref()).map_err(|m| lines.error(raw.cidr.span(), format!("{key}.cidr: {m}")))?;
    let direction = match raw.direction.get_ref().as_str() {
        "egress" | "out" => Direction::Egress,
        "ingress" | "in" => Direction::Ingress,
        other => {
            return Err(lines.error(
                raw.direction.span(),
                format!("{key}.direction: `{other}` is not `egress` or `ingress`"),
            ));
        }
    };
    let proto = match &raw.proto {
        None => Proto::Any,
        Some(p) => match p.get_ref().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" | "icmpv6" => Proto::Icmp,
            "any" => Proto::Any,
            other => {
                return Err(lines.error(p.span(), format!("{key}.proto: `{other}` is not tcp, udp, icmp or any")));
            }
        },
    };
    let ports = parse_ports(&raw.ports, &format!("{key}.ports"), lines)?;
    if !ports.is_empty() && !proto.has_ports() {
        return Err(lines.error(
            raw.ports[0].span(),
            format!("{key}.ports: only tcp and udp have ports; set proto = \"tcp\" or \"udp\""),
        ));
    }
    Ok(AllowEntry {
        cidr,
        direction,
        proto,
        ports,
        comment: raw.comment.clone(),
        line: lines.line_of(entry.span().start),
    })
}

//! One receiver set up for real frames: its namespace and veth pair, the filter on its
//! end, a web server where the case needs one, and threaded NAPI pinned to the
//! receiving core; the check that each case takes the path it means; and the timing of
//! one stretch of traffic.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use allowgate::{
    dataplane::{Dataplane, LoadOptions, detach_all},
    policy::Tables,
};
use allowgate_ebpf as abi;
use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode},
};

use super::{
    cases::{Load, Outcome, Receiver, Traffic},
    frames::{ALLOWED, GATEWAY, LEARNED, LEARNED_FIRST, RECEIVER, RECEIVER_MAC, SENDER_MAC, WEB_PORT, mac},
    generator::{Generator, GeneratorKind},
    measure::{Measured, NapiThreads, rx_packets, settled, snmp_counter},
    netns::{Namespace, enter_netns, run_cmd},
};

/// NAPI batching on the receiver: with a core that is only partly busy, a wake-up per
/// few frames would cost more than the frames (here 34 frames a wake-up and every filter
/// at the same 1.4 Mpps); the next poll is deferred instead, as a NIC's interrupt
/// moderation does (EBPF-NOTES). 50 us rather than the note's 100: a wake-up on this VM
/// comes 100-200 us after its timer, and at 1.2 Mpps the veth's 256-frame ring then
/// overflows between polls (about 40% of the frames lost at 100 us, about 10% at 50).
pub(crate) const NAPI_DEFER_HARD_IRQS: &str = "1";
pub(crate) const GRO_FLUSH_TIMEOUT_NS: &str = "50000";

/// What every rig is made from.
pub(crate) struct Setup<'a> {
    pub(crate) tag: &'a str,
    pub(crate) gen_ns: &'a Namespace,
    pub(crate) pins: &'a Path,
    pub(crate) tables: &'a BTreeMap<Load, Tables>,
    /// The catalog's IPv4 addresses and prefixes, for the other filters.
    pub(crate) hosts: &'a [Ipv4Addr],
    pub(crate) nets: &'a [String],
    pub(crate) gen_cpu: usize,
    pub(crate) napi_cpu: usize,
}

/// One receiver. Fields drop in order: the namespace (with the veth pair) goes last.
pub(crate) struct Rig {
    pub(crate) receiver: Receiver,
    pub(crate) sender_if: String,
    pub(crate) tap_if: String,
    receiver_if: String,
    napi: Option<NapiThreads>,
    /// XDP_DROP on the sender's end, its NAPI on the generator's core: the receiver's
    /// answers (RSTs, SYN-ACKs) end there, as at a router, and cost the receiving core
    /// nothing beyond sending them.
    sender_xdp: Option<Ebpf>,
    /// Kept alive: dropping them detaches the programs.
    xdp: Option<Ebpf>,
    allowgate: Option<(Dataplane, PathBuf)>,
    xdp_filter_bpffs: Option<PathBuf>,
    web: Option<TcpListener>,
    ns: Namespace,
}

/// Where one stretch of traffic ended, read before and after it.
#[derive(Default)]
struct Ends {
    delivered: u64,
    /// (passed, dropped, dropped by reason) on allowgate's ingress.
    allowgate: Option<(u64, u64, BTreeMap<abi::Reason, u64>)>,
}

impl Rig {
    pub(crate) fn create(setup: &Setup, index: usize, receiver: Receiver) -> anyhow::Result<Rig> {
        let tag = setup.tag;
        let ns = Namespace::create(format!("agtb{tag}r{index}"))?;
        // Short names: the NAPI kthread is "napi/<dev>-<id>" within 15 characters.
        let mut rig = Rig {
            receiver,
            sender_if: format!("a{tag}s{index}"),
            tap_if: format!("a{tag}t{index}"),
            receiver_if: format!("a{tag}r{index}"),
            napi: None,
            sender_xdp: None,
            xdp: None,
            allowgate: None,
            xdp_filter_bpffs: None,
            web: None,
            ns,
        };
        rig.link(setup)?;
        rig.filter(setup, index)?;
        if receiver.serves_web() {
            rig.web = Some(
                rig.ns
                    .run(|| TcpListener::bind((RECEIVER, WEB_PORT)).context("cannot listen on tcp/80"))?,
            );
        }
        // Threaded NAPI, once the veth has NAPI (an XDP program or GRO), batched, its
        // kthread pinned to the receiving core and first in line there.
        let ns = &rig.ns;
        ns.write_sysfs(&rig.receiver_if, "threaded", "1")?;
        ns.write_sysfs(&rig.receiver_if, "napi_defer_hard_irqs", NAPI_DEFER_HARD_IRQS)?;
        ns.write_sysfs(&rig.receiver_if, "gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS)?;
        rig.napi = Some(NapiThreads::find_and_pin(&rig.receiver_if, setup.napi_cpu, true)?);
        Ok(rig)
    }

    /// The veth pair, addresses and routes, and the sender's end.
    fn link(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let gen_ns = setup.gen_ns;
        run_cmd(std::process::Command::new("ip").args([
            "link",
            "add",
            &self.sender_if,
            "netns",
            &gen_ns.name,
            "address",
            &mac(&SENDER_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &self.receiver_if,
            "netns",
            &self.ns.name,
            "address",
            &mac(&RECEIVER_MAC),
        ]))?;
        // No TSO on the sender: veth hands an AF_PACKET skb to the peer's NAPI only
        // when GRO could take it (veth_skb_is_eligible_for_gro); else it would bypass
        // the NAPI thread that is timed.
        gen_ns.ethtool(&["-K", &self.sender_if, "tso", "off"])?;
        gen_ns.ip(&["link", "set", &self.sender_if, "addrgenmode", "none"])?;
        gen_ns.ip(&["link", "set", &self.sender_if, "up"])?;
        let sender = self.sender_if.clone();
        self.sender_xdp = Some(gen_ns.run(move || attach_yardstick(abi::PROG_TRAFFIC_DROP, &sender))?);
        gen_ns.write_sysfs(&self.sender_if, "threaded", "1")?;
        NapiThreads::find_and_pin(&self.sender_if, setup.gen_cpu, false)?;

        let ns = &self.ns;
        let dev = self.receiver_if.as_str();
        ns.ip(&["addr", "add", &format!("{RECEIVER}/24"), "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
        ns.ip(&[
            "neigh",
            "replace",
            &GATEWAY.to_string(),
            "lladdr",
            &mac(&SENDER_MAC),
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        for net in ["198.51.100.0/24", "203.0.113.0/24"] {
            ns.ip(&["route", "add", net, "via", &GATEWAY.to_string(), "dev", dev])?;
        }
        Ok(())
    }

    /// What sits on the receiver's end.
    fn filter(&mut self, setup: &Setup, index: usize) -> anyhow::Result<()> {
        let dev = self.receiver_if.clone();
        match self.receiver {
            Receiver::XdpDrop | Receiver::XdpPass => {
                let name = if self.receiver == Receiver::XdpDrop {
                    abi::PROG_TRAFFIC_DROP
                } else {
                    abi::PROG_TRAFFIC_PASS
                };
                self.xdp = Some(self.ns.run(move || attach_yardstick(name, &dev))?);
            }
            Receiver::XdpFilter | Receiver::XdpFilterWeb => {
                let dir = setup.pins.join(format!("xdp-{index}"));
                std::fs::create_dir_all(&dir)?;
                self.xdp_filter_bpffs = Some(dir.clone());
                let xdp_filter = |args: &[&str]| -> anyhow::Result<String> {
                    run_cmd(self.ns.nsenter("xdp-filter").args(args).env("LIBXDP_BPFFS", &dir))
                };
                xdp_filter(&["load", "--mode", "native", "--policy", "deny", &dev])?;
                for addr in setup.hosts.iter().map(Ipv4Addr::to_string).chain([ALLOWED.to_string()]) {
                    xdp_filter(&["ip", &addr, "--mode", "src"])?;
                }
                if self.receiver == Receiver::XdpFilterWeb {
                    xdp_filter(&["port", &WEB_PORT.to_string(), "--mode", "dst", "--proto", "tcp"])?;
                }
            }
            Receiver::Nft | Receiver::NftConntrack => {
                self.ns.ethtool(&["-K", &dev, "gro", "on"])?;
                let mut elements: Vec<String> = setup.hosts.iter().map(Ipv4Addr::to_string).collect();
                elements.extend(setup.nets.iter().cloned());
                elements.push(ALLOWED.to_string());
                let script = if self.receiver == Receiver::Nft {
                    nft_stateless(&dev, &elements)
                } else {
                    nft_conntrack(&dev, &elements)
                };
                let file = std::env::temp_dir().join(format!("allowgate-traffic-{}-{index}.nft", setup.tag));
                std::fs::write(&file, script)?;
                let result = run_cmd(self.ns.nsenter("nft").arg("-f").arg(&file));
                let _ = std::fs::remove_file(&file);
                result?;
            }
            Receiver::Allowgate(load) => {
                let dir = setup.pins.join(format!("ag-{index}"));
                let mut dataplane =
                    Dataplane::load(&dir, &LoadOptions::default()).context("cannot load the allowgate BPF object")?;
                let tables = &setup.tables[&load];
                dataplane.install(tables)?;
                if load == Load::CatalogLearned {
                    // What DNS learning leaves in the table: addresses of the catalog's
                    // names, here documentation ones, valid for the whole run.
                    let value = *tables.v4_host.values().next().context("the catalog has no address")?;
                    let expires = allowgate::dataplane::monotonic_ns() + 3_600_000_000_000;
                    for i in 0..LEARNED {
                        let addr = Ipv4Addr::new(198, 51, 100, LEARNED_FIRST + i);
                        dataplane.put_learned(IpAddr::V4(addr), value, expires)?;
                    }
                }
                let path = self.ns.path();
                // The attach resolves the interface in the calling thread's namespace.
                let dataplane = std::thread::scope(|s| {
                    s.spawn(move || -> anyhow::Result<Dataplane> {
                        enter_netns(&path)?;
                        let attachment = dataplane.attach(&dev, allowgate::dataplane::Placement::default())?;
                        if attachment.xdp_mode != allowgate::dataplane::XdpMode::Native {
                            bail!("XDP attached in generic mode on {dev}: the figures would not compare");
                        }
                        Ok(dataplane)
                    })
                    .join()
                    .map_err(|_| anyhow::anyhow!("the attaching thread panicked"))?
                })?;
                self.allowgate = Some((dataplane, dir));
            }
        }
        Ok(())
    }

    /// Sends a short burst and checks the receiver did what the case means: the frames
    /// reach its NAPI, the stack delivers the ones meant for it and none of the others,
    /// and allowgate counts them as passed or dropped. Returns what happened, in words.
    pub(crate) fn check_path(&self, generator: &Generator, target: usize, traffic: Traffic) -> anyhow::Result<String> {
        let want = self.receiver.expect(traffic);
        let before = self.ends()?;
        let (m, _) = self.measure(generator, target, traffic, 0.2)?;
        let after = self.ends()?;
        let what = format!("{} {}", self.receiver.key(), traffic.key());
        if m.frames == 0 {
            bail!("{what}: no frame reached the receiver's NAPI");
        }
        let delivered = after.delivered.saturating_sub(before.delivered);
        let ok = match want {
            Outcome::Dropped => delivered <= m.frames / 100,
            Outcome::ToStack => delivered >= m.frames * 9 / 10,
        };
        if !ok {
            bail!(
                "{what}: the stack took {delivered} of {} frames, the case means {}: refusing to time the wrong path",
                m.frames,
                want.as_str()
            );
        }
        let (Some((pass0, drop0, reasons0)), Some((pass1, drop1, reasons1))) = (before.allowgate, after.allowgate)
        else {
            return Ok(want.as_str().to_string());
        };
        let (passed, dropped) = (pass1 - pass0, drop1 - drop0);
        let ok = match want {
            Outcome::Dropped => dropped >= m.frames * 9 / 10 && passed == 0,
            Outcome::ToStack => passed >= m.frames * 9 / 10 && dropped == 0,
        };
        if !ok {
            bail!(
                "{what}: allowgate passed {passed} and dropped {dropped} of {} frames: refusing to time the wrong path",
                m.frames
            );
        }
        if want == Outcome::Dropped {
            // The reason most of them were dropped for, as the kernel counted it.
            let top = reasons1
                .iter()
                .map(|(r, n)| (n.saturating_sub(reasons0.get(r).copied().unwrap_or(0)), r))
                .max();
            if let Some((_, reason)) = top {
                return Ok(format!("dropped ({})", reason.as_str()));
            }
        }
        Ok(want.as_str().to_string())
    }

    fn ends(&self) -> anyhow::Result<Ends> {
        let snmp = run_cmd(self.ns.nsenter("cat").arg("/proc/net/snmp"))?;
        let delivered = snmp_counter(&snmp, "Ip", "InDelivers")?;
        let allowgate = match &self.allowgate {
            None => None,
            Some((dataplane, _)) => {
                let counters = dataplane.counters()?;
                let reasons = counters
                    .by_key
                    .iter()
                    .filter(|((d, v, _), _)| *d == abi::DIR_INGRESS && *v == abi::VERDICT_DROP)
                    .map(|((_, _, r), c)| (*r, c.packets))
                    .collect();
                Some((
                    counters.packets(abi::DIR_INGRESS, abi::VERDICT_PASS),
                    counters.packets(abi::DIR_INGRESS, abi::VERDICT_DROP),
                    reasons,
                ))
            }
        };
        Ok(Ends { delivered, allowgate })
    }

    /// Generates for `seconds` and returns what the receiver's NAPI did meanwhile, and
    /// which generator sent.
    pub(crate) fn measure(
        &self,
        generator: &Generator,
        target: usize,
        traffic: Traffic,
        seconds: f64,
    ) -> anyhow::Result<(Measured, GeneratorKind)> {
        let napi = self.napi.as_ref().context("the rig has no NAPI thread")?;
        let rx0 = self.rx_packets()?;
        let (cpu0, wake0) = napi.read()?;
        let sent = generator.send(target, traffic, Duration::from_secs_f64(seconds))?;
        let rx1 = settled(|| self.rx_packets())?;
        let (cpu1, wake1) = napi.read()?;
        Ok((
            Measured {
                frames: rx1.saturating_sub(rx0),
                cpu_s: cpu1.saturating_sub(cpu0) as f64 / 1e9,
                wakeups: wake1.saturating_sub(wake0),
                offered: sent.frames,
                offered_s: sent.seconds,
            },
            sent.by,
        ))
    }

    fn rx_packets(&self) -> anyhow::Result<u64> {
        let out = self.ns.ip(&["-s", "link", "show", "dev", &self.receiver_if])?;
        rx_packets(&out, &self.receiver_if)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(dir) = &self.xdp_filter_bpffs {
            let _ = self
                .ns
                .nsenter("xdp-filter")
                .args(["unload", "--all", &self.receiver_if])
                .env("LIBXDP_BPFFS", dir)
                .output();
        }
        if let Some((dataplane, dir)) = self.allowgate.take() {
            drop(dataplane);
            for problem in detach_all(&dir, &[]) {
                eprintln!("traffic: cleanup of {}: {problem}", dir.display());
            }
        }
        // The other fields go next, the namespace last, and the veth pair with it.
    }
}

/// One of the bench's own XDP programs (traffic_drop, traffic_pass) attached in native
/// mode to `dev` in the calling thread's namespace.
fn attach_yardstick(name: &'static str, dev: &str) -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new().load(abi::TRAFFIC_OBJ)?;
    let prog: &mut Xdp = ebpf.program_mut(name).context("program missing")?.try_into()?;
    prog.load()?;
    prog.attach(dev, XdpMode::Driver)
        .with_context(|| format!("cannot attach {name} to {dev}"))?;
    Ok(ebpf)
}

/// The stateless yardstick: the addresses in an interval set on a netdev ingress chain,
/// the earliest hook nftables has.
fn nft_stateless(dev: &str, elements: &[String]) -> String {
    format!(
        "table netdev agbench {{\n  set allow4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}\n  \
         chain ingress {{\n    type filter hook ingress device \"{dev}\" priority 0; policy accept;\n    \
         meta protocol ip ip saddr @allow4 accept\n    meta protocol ip drop\n  }}\n}}\n",
        elements.join(", ")
    )
}

/// A stateful firewall as conntrack users write one: answers on tracked connections
/// pass, a new connection must start with a SYN (no picked-up ACKs), the web server is
/// open to the world, the listed addresses may open connections, the rest drops.
/// `ct state` needs conntrack, which runs at prerouting (priority -200): in a netdev or
/// inet ingress chain every packet is still untracked, so the chain is at prerouting,
/// priority filter (0), the earliest it can judge by connection.
fn nft_conntrack(dev: &str, elements: &[String]) -> String {
    format!(
        "table inet agbench {{\n  set allow4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}\n  \
         chain prerouting {{\n    type filter hook prerouting priority filter; policy accept;\n    \
         iifname != \"{dev}\" accept\n    \
         ct state established,related accept\n    \
         ct state invalid drop\n    \
         tcp flags & (fin | syn | rst | ack) != syn ct state new drop\n    \
         tcp dport {WEB_PORT} accept\n    \
         ip saddr @allow4 accept\n    \
         drop\n  }}\n}}\n",
        elements.join(", ")
    )
}

//! The data plane's side of the catalog's DNS names: the resolvers whose answers it
//! holds, the learner's heartbeat and give-back path, the learned addresses, and giving
//! held answers back to the stack as live frames where the kernel allows it.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use allowgate_ebpf::{self as abi, map};
use aya::{
    EbpfLoader,
    maps::{Array, HashMap, MapData, RingBuf},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};

use super::{Dataplane, DataplaneError, map_err};
use crate::policy::config::GiveBackPath;

/// What the daemon tells the data plane about its learner (`ag_dns_ctl`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsControl {
    /// Holds and copies answers only while the last heartbeat is younger than this;
    /// `None`: no learner, answers pass untouched.
    pub stale_after: Option<Duration>,
    /// Held only while a path is in force; `None` copies answers for the learner.
    pub path: GiveBackPath,
    /// Held answers given back, and lost, so far (the kernel keeps them for status).
    pub given_back: u64,
    pub failed: u64,
}

/// The give-back path and counts as the pins hold them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsLive {
    /// The path in force; `None` (the path) also when no learner is alive.
    pub path: GiveBackPath,
    /// Whether a learner's heartbeat is fresh now.
    pub learning: bool,
    pub given_back: u64,
    pub failed: u64,
}

impl DnsLive {
    pub(super) fn of(ctl: &abi::DnsCtl) -> DnsLive {
        let learning = ctl.heartbeat_ns != 0 && monotonic_ns().wrapping_sub(ctl.heartbeat_ns) < ctl.stale_after_ns;
        DnsLive {
            path: if learning {
                path_of(ctl.give_back)
            } else {
                GiveBackPath::None
            },
            learning,
            given_back: ctl.given_back,
            failed: ctl.give_back_failed,
        }
    }
}

fn path_code(path: GiveBackPath) -> u32 {
    match path {
        GiveBackPath::None => abi::GIVE_BACK_NONE,
        GiveBackPath::LiveFrames => abi::GIVE_BACK_LIVE_FRAMES,
        GiveBackPath::Loopback => abi::GIVE_BACK_LOOPBACK,
    }
}

fn path_of(code: u32) -> GiveBackPath {
    match code {
        abi::GIVE_BACK_LIVE_FRAMES => GiveBackPath::LiveFrames,
        abi::GIVE_BACK_LOOPBACK => GiveBackPath::Loopback,
        _ => GiveBackPath::None,
    }
}

/// The clock `bpf_ktime_get_ns()` reads: CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Resolvers are keyed by their IPv6 form, IPv4 as ::ffff:a.b.c.d.
fn server_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The do-nothing XDP program of `ebpf`.
fn noop_program(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(abi::PROG_NOOP)
        .ok_or(DataplaneError::Missing {
            what: "program",
            name: abi::PROG_NOOP,
        })?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            name: abi::PROG_NOOP,
            source,
        })
}

impl Dataplane {
    fn dyn_maps_present(&self) -> bool {
        self.ebpf.map(map::DNS_CTL).is_some()
    }

    /// The resolvers whose answers are held for the learner (replacing the old set).
    pub fn set_dns_servers(&mut self, servers: &[IpAddr]) -> Result<(), DataplaneError> {
        let mut m: HashMap<&mut MapData, abi::DnsServerKey, u8> =
            HashMap::try_from(self.map_mut(map::DNS_SERVERS)?).map_err(map_err("open ag_dns_servers"))?;
        let old: Vec<abi::DnsServerKey> = m.keys().filter_map(Result::ok).collect();
        for k in old {
            let _ = m.remove(&k);
        }
        for &s in servers.iter().take(abi::MAX_DNS_SERVERS as usize) {
            m.insert(abi::DnsServerKey { addr: server_key(s) }, 1, 0)
                .map_err(map_err("set a DNS server"))?;
        }
        Ok(())
    }

    /// Tells the data plane the learner is alive (a heartbeat of now) and how it gives
    /// answers back: answers are held only while the heartbeat is younger than
    /// `stale_after` and a path is in force. `stale_after: None` stops holding and
    /// copying at once.
    pub fn set_dns_control(&mut self, control: &DnsControl) -> Result<(), DataplaneError> {
        if !self.dyn_maps_present() {
            return Ok(());
        }
        let ctl = abi::DnsCtl {
            heartbeat_ns: control.stale_after.map_or(0, |_| monotonic_ns()),
            stale_after_ns: control.stale_after.map_or(0, |d| d.as_nanos() as u64),
            give_back: path_code(control.path),
            pad: 0,
            given_back: control.given_back,
            give_back_failed: control.failed,
        };
        let mut m: Array<&mut MapData, abi::DnsCtl> =
            Array::try_from(self.map_mut(map::DNS_CTL)?).map_err(map_err("open ag_dns_ctl"))?;
        m.set(0, ctl, 0).map_err(map_err("write the learner's control"))
    }

    /// What `ag_dns_ctl` holds now: an earlier daemon's counts carry on.
    pub fn dns_live(&self) -> Result<DnsLive, DataplaneError> {
        let m: Array<&MapData, abi::DnsCtl> =
            Array::try_from(self.map(map::DNS_CTL)?).map_err(map_err("open ag_dns_ctl"))?;
        Ok(DnsLive::of(&m.get(&0, 0).map_err(map_err("read ag_dns_ctl"))?))
    }

    /// Allows what `value` says for `addr` until `expires_ns` (monotonic clock).
    pub fn put_learned(
        &mut self,
        addr: IpAddr,
        value: abi::PolicyValue,
        expires_ns: u64,
    ) -> Result<(), DataplaneError> {
        let v = abi::DynValue {
            policy: value,
            expires_ns,
        };
        // Before the insert: from here on the filter looks in this family's table.
        self.set_learned_empty(addr.is_ipv4(), false)?;
        match addr {
            IpAddr::V4(a) => {
                let mut m: HashMap<&mut MapData, abi::V4HostKey, abi::DynValue> =
                    HashMap::try_from(self.map_mut(map::V4_DYN)?).map_err(map_err("open ag_v4_dyn"))?;
                m.insert(abi::V4HostKey { addr: a.octets() }, v, 0)
                    .map_err(map_err("add a learned address"))
            }
            IpAddr::V6(a) => {
                let mut m: HashMap<&mut MapData, abi::V6HostKey, abi::DynValue> =
                    HashMap::try_from(self.map_mut(map::V6_DYN)?).map_err(map_err("open ag_v6_dyn"))?;
                m.insert(abi::V6HostKey { addr: a.octets() }, v, 0)
                    .map_err(map_err("add a learned address"))
            }
        }
    }

    pub fn remove_learned(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        let result = match addr {
            IpAddr::V4(a) => {
                let mut m: HashMap<&mut MapData, abi::V4HostKey, abi::DynValue> =
                    HashMap::try_from(self.map_mut(map::V4_DYN)?).map_err(map_err("open ag_v4_dyn"))?;
                m.remove(&abi::V4HostKey { addr: a.octets() })
            }
            IpAddr::V6(a) => {
                let mut m: HashMap<&mut MapData, abi::V6HostKey, abi::DynValue> =
                    HashMap::try_from(self.map_mut(map::V6_DYN)?).map_err(map_err("open ag_v6_dyn"))?;
                m.remove(&abi::V6HostKey { addr: a.octets() })
            }
        };
        // Already gone is gone (aya reports the kernel's ENOENT as a syscall error).
        match result {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(map_err("remove a learned address")(e)),
        }
        if self.learned_is_empty(addr.is_ipv4())? {
            self.set_learned_empty(addr.is_ipv4(), true)?;
        }
        Ok(())
    }

    /// Whether the learned table of the family (IPv4 or IPv6) holds no entry at all.
    fn learned_is_empty(&self, v4: bool) -> Result<bool, DataplaneError> {
        Ok(if v4 {
            let m: HashMap<&MapData, abi::V4HostKey, abi::DynValue> =
                HashMap::try_from(self.map(map::V4_DYN)?).map_err(map_err("open ag_v4_dyn"))?;
            m.keys().next().is_none()
        } else {
            let m: HashMap<&MapData, abi::V6HostKey, abi::DynValue> =
                HashMap::try_from(self.map(map::V6_DYN)?).map_err(map_err("open ag_v6_dyn"))?;
            m.keys().next().is_none()
        })
    }

    /// Tells the filter whether to look in a family's learned table. Only this process
    /// writes the learned tables, so "empty" stays true until its next insert, which
    /// clears the bit first.
    fn set_learned_empty(&mut self, v4: bool, empty: bool) -> Result<(), DataplaneError> {
        let bit = if v4 { abi::DYN_V4_EMPTY } else { abi::DYN_V6_EMPTY };
        let mut m: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(map::DYN_EMPTY)?).map_err(map_err("open ag_dyn_empty"))?;
        let old = m.get(&0, 0).map_err(map_err("read ag_dyn_empty"))?;
        let new = if empty { old | bit } else { old & !bit };
        if new != old {
            m.set(0, new, 0).map_err(map_err("write ag_dyn_empty"))?;
        }
        Ok(())
    }

    /// Sets the empty bits from what the learned tables hold now (an earlier daemon may
    /// have left entries, or none).
    pub(crate) fn refresh_learned_empty(&mut self) -> Result<(), DataplaneError> {
        for v4 in [true, false] {
            let empty = self.learned_is_empty(v4)?;
            self.set_learned_empty(v4, empty)?;
        }
        Ok(())
    }

    /// Every learned address the data plane holds, with its expiry (monotonic ns): what
    /// an earlier daemon learned.
    pub fn learned_addresses(&self) -> Result<Vec<(IpAddr, u64)>, DataplaneError> {
        let mut out = Vec::new();
        let m: HashMap<&MapData, abi::V4HostKey, abi::DynValue> =
            HashMap::try_from(self.map(map::V4_DYN)?).map_err(map_err("open ag_v4_dyn"))?;
        out.extend(
            m.iter()
                .filter_map(Result::ok)
                .map(|(k, v)| (IpAddr::from(k.addr), v.expires_ns)),
        );
        let m: HashMap<&MapData, abi::V6HostKey, abi::DynValue> =
            HashMap::try_from(self.map(map::V6_DYN)?).map_err(map_err("open ag_v6_dyn"))?;
        out.extend(
            m.iter()
                .filter_map(Result::ok)
                .map(|(k, v)| (IpAddr::V6(Ipv6Addr::from(k.addr)), v.expires_ns)),
        );
        Ok(out)
    }

    /// The ring of held answers, for the caller to poll.
    pub fn take_dns_frames(&mut self) -> Result<RingBuf<MapData>, DataplaneError> {
        let m = self.ebpf.take_map(map::DNS_FRAMES).ok_or(DataplaneError::Missing {
            what: "map",
            name: map::DNS_FRAMES,
        })?;
        RingBuf::try_from(m).map_err(map_err("open the DNS answer ring"))
    }

    /// Lets the answer (server, id, client port) through once without holding it: for
    /// generic-mode XDP, which sees a re-injected frame again.
    pub fn release(&mut self, server: IpAddr, id: u16, client_port: u16) -> Result<(), DataplaneError> {
        let mut m: HashMap<&mut MapData, abi::DnsReleaseKey, u8> =
            HashMap::try_from(self.map_mut(map::DNS_RELEASE)?).map_err(map_err("open ag_dns_release"))?;
        let key = abi::DnsReleaseKey {
            server: server_key(server),
            dns_id: id,
            client_port,
        };
        m.insert(key, 1, 0).map_err(map_err("release a held answer"))
    }

    /// Forgets a release the data plane did not consume: a native-mode XDP program
    /// never sees the re-injected frame, and a key left behind would let a later answer
    /// with the same (server, id, port) through unheld.
    pub fn unrelease(&mut self, server: IpAddr, id: u16, client_port: u16) -> Result<(), DataplaneError> {
        let mut m: HashMap<&mut MapData, abi::DnsReleaseKey, u8> =
            HashMap::try_from(self.map_mut(map::DNS_RELEASE)?).map_err(map_err("open ag_dns_release"))?;
        let key = abi::DnsReleaseKey {
            server: server_key(server),
            dns_id: id,
            client_port,
        };
        match m.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("forget a released answer")(e)),
        }
    }

    /// Gives a held frame back to the stack as if it had just arrived on `ifindex`:
    /// BPF_PROG_TEST_RUN of a do-nothing XDP program in live-frames mode. Hardened
    /// kernels refuse that run (EPERM, even to root) though they load the program:
    /// the caller proves the path before it holds anything (`dns::give_back`).
    pub fn give_back_live_frame(&mut self, frame: &[u8], ifindex: u32) -> Result<(), DataplaneError> {
        let program_err = |source| DataplaneError::Program {
            name: abi::PROG_NOOP,
            source,
        };
        if self.noop.is_none() {
            let mut ebpf = EbpfLoader::new()
                .load(abi::NOOP_OBJ)
                .map_err(|source| DataplaneError::Load { source })?;
            noop_program(&mut ebpf)?.load().map_err(program_err)?;
            self.noop = Some(ebpf);
        }
        let prog = noop_program(self.noop.as_mut().expect("loaded above"))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex; the kernel wants data_end to be the frame's length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::new()
        };
        prog.test_run(opts)
            .map(|_| ())
            .map_err(|source| DataplaneError::LiveFrames { source })
    }
}

/// A frame the stack discards without a trace, for proving the live-frame path: an
/// Ethernet frame to the loopback's all-zero address with the "local experimental"
/// ethertype (IEEE 802 assigns 0x88b5 for exactly such use), which no protocol handler
/// takes. It never reaches an interface allowgate is attached to.
pub const LIVE_FRAME_PROBE: [u8; 60] = {
    let mut f = [0u8; 60];
    f[12] = 0x88;
    f[13] = 0xb5;
    f
};

fn is_not_found(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::ENOENT)
        {
            return true;
        }
        source = e.source();
    }
    false
}

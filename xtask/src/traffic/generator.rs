//! Where the frames come from: one thread in the generator's namespace, pinned to its
//! own core, sending out of one sender veth per receiver.
//!
//! - **tap** (the default): frames written to a tap device whose XDP program
//!   (`traffic_gen`) redirects them out of the sender veth. The receiver gets
//!   xdp_frames on its veth ring, as from a NIC's driver (or live frames), so its XDP
//!   program runs on the frame itself; 0.6-1.4 Mpps from one core here (less when the
//!   machine is busy), one write() per frame.
//! - **af-packet**: sendmmsg batches of 64 on an AF_PACKET socket with
//!   PACKET_QDISC_BYPASS. The receiver gets skbs, and its veth copies each one into a
//!   page with XDP headroom before XDP runs: a cost a NIC does not have, so XDP filters
//!   look dearer than they are. For comparison only.
//! - **live**: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on `traffic_gen`, 8-12
//!   Mpps where the kernel allows it. Probed once; where refused (EPERM here) one line
//!   says so and the tap generates. A test run repeats one frame, so the floods, whose
//!   every frame differs, come from the tap even then.

use std::{
    collections::HashMap,
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use allowgate_ebpf as abi;
use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};

use super::{
    cases::Traffic,
    frames::{FRAME_LEN, FrameSource},
    measure::pin_to_cpu,
    netns::{Namespace, run_cmd},
    stop_requested,
};

/// Which generator the bench uses (`--generator`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum GeneratorKind {
    /// Frames written to a tap whose XDP program redirects them out of the veth: the
    /// receiver gets xdp_frames, as from a NIC
    Tap,
    /// AF_PACKET sendmmsg with PACKET_QDISC_BYPASS: the receiver gets skbs (its veth
    /// copies each before XDP runs)
    AfPacket,
    /// Live-frame test runs where the kernel allows them (else the tap, said once)
    Live,
}

impl GeneratorKind {
    pub(crate) fn key(self) -> &'static str {
        match self {
            GeneratorKind::Tap => "tap",
            GeneratorKind::AfPacket => "af-packet",
            GeneratorKind::Live => "live",
        }
    }
}

/// Frames per AF_PACKET sendmmsg call.
const MMSG_BATCH: usize = 64;
/// Frames per live-frame test-run call: each call costs a synchronize_rcu(), so few long
/// ones.
const FRAMES_PER_CALL: u32 = 1 << 21;
/// Frames the kernel builds per batch of the live-frame loop.
const LIVE_BATCH: u32 = 64;
/// linux/if_packet.h; not in the libc crate.
const PACKET_QDISC_BYPASS: libc::c_int = 20;

/// What one request sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    pub(crate) frames: u64,
    pub(crate) seconds: f64,
    pub(crate) by: GeneratorKind,
}

type Request = (usize, Traffic, Duration);

/// The generator thread and its channels; dropping it ends the thread, which closes its
/// taps and sockets and detaches its programs.
pub(crate) struct Generator {
    /// The kind asked for, after the live-frame probe.
    pub(crate) kind: GeneratorKind,
    requests: Option<mpsc::Sender<Request>>,
    replies: mpsc::Receiver<anyhow::Result<Sent>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

/// One receiver as the generator sees it: the sender veth and what writes to it.
pub(crate) struct TargetSpec {
    pub(crate) sender_if: String,
    /// The tap to create for it, if the kind needs one.
    pub(crate) tap_if: String,
}

impl Generator {
    pub(crate) fn start(
        kind: GeneratorKind,
        ns: &Namespace,
        targets: Vec<TargetSpec>,
        cpu: usize,
    ) -> anyhow::Result<Generator> {
        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let (rep_tx, rep_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns_name = ns.name.clone();
        let thread = ns.spawn(move || {
            let mut state = match Worker::set_up(kind, &ns_name, &targets, cpu) {
                Ok(state) => {
                    let _ = ready_tx.send(Ok(state.kind));
                    state
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            while let Ok((target, traffic, duration)) = req_rx.recv() {
                let _ = rep_tx.send(state.send(target, traffic, duration));
            }
            Ok(())
        });
        let kind = ready_rx
            .recv()
            .map_err(|_| anyhow!("the generator thread died"))?
            .context("cannot start the traffic generator")?;
        Ok(Generator {
            kind,
            requests: Some(req_tx),
            replies: rep_rx,
            thread: Some(thread),
        })
    }

    /// Sends `traffic` out of target's veth for about `duration`.
    pub(crate) fn send(&self, target: usize, traffic: Traffic, duration: Duration) -> anyhow::Result<Sent> {
        self.requests
            .as_ref()
            .expect("until drop")
            .send((target, traffic, duration))
            .map_err(|_| anyhow!("the generator thread died"))?;
        self.replies.recv().map_err(|_| anyhow!("the generator thread died"))?
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The generator thread's state.
struct Worker {
    kind: GeneratorKind,
    targets: Vec<Target>,
    /// One stream per (target, traffic), carried on from slice to slice: a flood's
    /// frames never start over.
    sources: HashMap<(usize, Traffic), FrameSource>,
}

struct Target {
    tap: Option<Tap>,
    packet: Option<OwnedFd>,
    live: Option<Ebpf>,
}

impl Worker {
    fn set_up(kind: GeneratorKind, ns: &str, specs: &[TargetSpec], cpu: usize) -> anyhow::Result<Worker> {
        pin_to_cpu(0, cpu)?;
        let mut kind = kind;
        if kind == GeneratorKind::Live {
            let first = specs.first().context("no receiver to send to")?;
            if let Err(refused) = probe_live(&first.sender_if) {
                eprintln!("traffic: {refused:#}: generating with a tap instead");
                kind = GeneratorKind::Tap;
            }
        }
        let mut targets = Vec::new();
        for spec in specs {
            let ifindex = if_index(&spec.sender_if)?;
            targets.push(Target {
                tap: match kind {
                    GeneratorKind::Tap | GeneratorKind::Live => Some(Tap::create(ns, &spec.tap_if, ifindex)?),
                    GeneratorKind::AfPacket => None,
                },
                packet: match kind {
                    GeneratorKind::AfPacket => Some(packet_socket(ifindex)?),
                    _ => None,
                },
                live: match kind {
                    GeneratorKind::Live => Some(load_gen(ifindex)?),
                    _ => None,
                },
            });
        }
        Ok(Worker {
            kind,
            targets,
            sources: HashMap::new(),
        })
    }

    fn send(&mut self, target: usize, traffic: Traffic, duration: Duration) -> anyhow::Result<Sent> {
        let t = self.targets.get(target).context("no such target")?;
        let source = self
            .sources
            .entry((target, traffic))
            .or_insert_with(|| FrameSource::new(traffic, 0x7a11_0000 + target as u64));
        let start = Instant::now();
        let (frames, by) = match (self.kind, &t.live, &t.tap, &t.packet) {
            (GeneratorKind::Live, Some(live), _, _) if !traffic.varies() => {
                (send_live(live, source.next_frame(), duration)?, GeneratorKind::Live)
            }
            (_, _, Some(tap), _) => (tap.send(source, duration)?, GeneratorKind::Tap),
            (_, _, _, Some(socket)) => (send_packets(socket, source, duration)?, GeneratorKind::AfPacket),
            _ => bail!("the generator has no way to send to target {target}"),
        };
        Ok(Sent {
            frames,
            seconds: start.elapsed().as_secs_f64(),
            by,
        })
    }
}

fn if_index(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {name} in the generator's namespace");
    }
    Ok(index)
}

/// A tap device in the generator's namespace with `traffic_gen` on its XDP hook: every
/// frame written to it leaves through the sender veth as an xdp_frame. Closing the fd
/// removes the device.
struct Tap {
    fd: OwnedFd,
    /// Kept alive: dropping it detaches the program.
    _xdp: Ebpf,
}

impl Tap {
    fn create(ns: &str, name: &str, target_ifindex: u32) -> anyhow::Result<Tap> {
        // O_NONBLOCK: the tun driver runs XDP on a write only for a non-blocking file
        // (tun_can_build_skb); otherwise it builds an skb and XDP runs in generic mode.
        // SAFETY: a NUL-terminated path; the returned fd is owned below.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            bail!("cannot open /dev/net/tun: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed ifreq is valid; the name fits (checked) with its NUL.
        unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            if name.len() >= ifr.ifr_name.len() {
                bail!("tap name {name} is too long");
            }
            for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
                *dst = src as libc::c_char;
            }
            ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
            if libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr) != 0 {
                bail!("cannot create tap {name}: {}", std::io::Error::last_os_error());
            }
        }
        // No IPv6 link-local address: the tap sends nothing of its own.
        let ip = |args: &[&str]| run_cmd(std::process::Command::new("ip").args(["-n", ns]).args(args));
        ip(&["link", "set", name, "addrgenmode", "none"])?;
        ip(&["link", "set", name, "up"])?;
        let mut ebpf = load_gen(target_ifindex)?;
        let prog: &mut Xdp = ebpf
            .program_mut(abi::PROG_TRAFFIC_GEN)
            .context("the generator program is missing")?
            .try_into()?;
        prog.attach(name, XdpMode::Driver)
            .with_context(|| format!("cannot attach the redirect to tap {name} in native mode"))?;
        Ok(Tap { fd, _xdp: ebpf })
    }

    /// One write() per frame until `duration` has passed.
    fn send(&self, source: &mut FrameSource, duration: Duration) -> anyhow::Result<u64> {
        let start = Instant::now();
        let (mut sent, mut refused) = (0u64, 0u64);
        let mut last_error = None;
        while start.elapsed() < duration && !stop_requested() {
            for _ in 0..256 {
                let frame = source.next_frame();
                // SAFETY: writes FRAME_LEN bytes from a live buffer of that length.
                let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), FRAME_LEN) };
                if n == FRAME_LEN as isize {
                    sent += 1;
                } else {
                    refused += 1;
                    last_error = Some(std::io::Error::last_os_error());
                }
            }
        }
        if sent == 0 && refused > 0 {
            bail!(
                "the tap took no frame: {}",
                last_error.map(|e| e.to_string()).unwrap_or_default()
            );
        }
        Ok(sent)
    }
}

/// An AF_PACKET socket bound to the sender veth (protocol 0: it receives nothing),
/// skipping the qdisc as a generator should.
fn packet_socket(ifindex: u32) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket calls on an fd owned below; the structs are fully set.
    unsafe {
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            bail!("cannot open an AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let one: libc::c_int = 1;
        if libc::setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            bail!("cannot set PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        if libc::bind(
            raw,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) != 0
        {
            bail!("cannot bind the AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// sendmmsg batches of MMSG_BATCH frames until `duration` has passed.
fn send_packets(socket: &OwnedFd, source: &mut FrameSource, duration: Duration) -> anyhow::Result<u64> {
    let mut buffers = vec![[0u8; FRAME_LEN]; MMSG_BATCH];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration && !stop_requested() {
        for b in buffers.iter_mut() {
            *b = *source.next_frame();
        }
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: FRAME_LEN,
            })
            .collect();
        // SAFETY: a zeroed mmsghdr is valid; each points at one live iovec.
        let mut msgs: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs and what they point at live across the call.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), MMSG_BATCH as u32, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            // A full device queue: try again.
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.kind() == std::io::ErrorKind::WouldBlock {
                continue;
            }
            bail!("sendmmsg on the AF_PACKET socket: {err}");
        }
        sent += n as u64;
    }
    Ok(sent)
}

/// `traffic_gen` loaded (not attached) to redirect to `ifindex`, for live-frame runs.
fn load_gen(ifindex: u32) -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .override_global(abi::GLOBAL_TRAFFIC_TARGET, &ifindex, true)
        .load(abi::TRAFFIC_OBJ)
        .context("cannot load the traffic generator")?;
    let prog: &mut Xdp = ebpf
        .program_mut(abi::PROG_TRAFFIC_GEN)
        .context("the generator program is missing")?
        .try_into()?;
    prog.load().context("cannot load the traffic generator")?;
    Ok(ebpf)
}

/// One live-frame test run of one frame: whether this kernel allows them.
fn probe_live(sender_if: &str) -> anyhow::Result<()> {
    let ebpf = load_gen(if_index(sender_if)?)?;
    let frame = *FrameSource::new(Traffic::Denied, 1).next_frame();
    live_run(&ebpf, &frame, 1).map_err(|e| {
        let errno = e
            .chain()
            .find_map(|c| c.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        if errno == Some(libc::EPERM) {
            anyhow!("the kernel refused a live-frame test run (EPERM)")
        } else {
            anyhow!("the kernel refused a live-frame test run ({e:#})")
        }
    })
}

fn live_run(ebpf: &Ebpf, frame: &[u8], repeat: u32) -> anyhow::Result<()> {
    let prog: &Xdp = ebpf
        .program(abi::PROG_TRAFFIC_GEN)
        .context("the generator program is missing")?
        .try_into()?;
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
        ..TestRunOptions::new()
    })
    .map_err(|e| match e {
        aya::programs::ProgramError::SyscallError(s) => anyhow::Error::new(s.io_error).context("bpf_prog_test_run"),
        other => anyhow::Error::new(other),
    })?;
    Ok(())
}

fn send_live(ebpf: &Ebpf, frame: &[u8], duration: Duration) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut sent = 0u64;
    // Short runs (the path checks) get short calls.
    let repeat = if duration < Duration::from_millis(500) {
        FRAMES_PER_CALL / 8
    } else {
        FRAMES_PER_CALL
    };
    while start.elapsed() < duration && !stop_requested() {
        live_run(ebpf, frame, repeat).context("the live-frame test run failed")?;
        sent += u64::from(repeat);
    }
    Ok(sent)
}

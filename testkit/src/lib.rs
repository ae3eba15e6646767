//! What allowgate's tests, demo and bench share: unique names, pin directories and
//! namespaces that clean up after themselves (on failure too), the daemon guard, packet
//! builders, and the test-run harness that judges a frame in the kernel and reads back
//! why. A dev crate (never published): the agent's integration tests and xtask use it.

pub mod config;
pub mod daemon;
pub mod dns;
pub mod exposition;
pub mod frames;
pub mod live_frames;
pub mod netns;
pub mod packet;
pub mod policy;
pub mod raw;
pub mod talk;
pub mod world;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use allowgate::{
    dataplane::{Dataplane, LoadOptions, detach_all},
    policy::{
        Mode, Policy, compile_policy,
        model::{Hook, Packet, Reason, Tracker, Verdict},
    },
};
use allowgate_ebpf as abi;
use packet::Shape;

/// An `[[allow]]` entry as the config would make it.
pub fn allow(
    cidr: &str,
    direction: allowgate::catalog::Direction,
    proto: allowgate::catalog::Proto,
    ports: &[allowgate::catalog::PortRange],
) -> allowgate::policy::config::AllowEntry {
    let cidr: ipnet::IpNet = cidr.parse().expect("a CIDR");
    assert_eq!(
        cidr,
        cidr.trunc(),
        "{cidr} has host bits set; the config would refuse it"
    );
    allowgate::policy::config::AllowEntry {
        cidr,
        direction,
        proto,
        ports: ports.to_vec(),
        comment: None,
        line: 1,
    }
}

/// A name no other test (or test run) uses at the same time: `prefix`, the pid, a
/// counter. Short enough for an interface name.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn require_root() {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").expect("read /proc/self").uid();
    assert!(
        uid == 0,
        "this test loads BPF programs and needs root: run `cargo xtask test` as root"
    );
}

/// A bpffs directory of this test's own, detached and removed on drop.
pub struct PinDir(pub PathBuf);

impl Default for PinDir {
    fn default() -> Self {
        PinDir::new()
    }
}

impl PinDir {
    pub fn new() -> PinDir {
        PinDir::with_prefix("allowgate-test-")
    }

    pub fn with_prefix(prefix: &str) -> PinDir {
        require_root();
        allowgate::dataplane::ensure_bpffs().expect("bpffs");
        PinDir(Path::new("/sys/fs/bpf").join(unique(prefix)))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let problems = detach_all(&self.0, &[]);
        if !problems.is_empty() {
            eprintln!("cleanup of {}: {}", self.0.display(), problems.join("; "));
        }
    }
}

/// What the kernel did with one frame: whether it went on, and the counter it bumped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub delivered: bool,
    pub verdict: Verdict,
    pub reason: Reason,
}

/// The loaded programs with a policy installed, not attached anywhere: frames go
/// through BPF_PROG_TEST_RUN only.
pub struct Harness {
    pub dataplane: Dataplane,
    pub policy: Policy,
    /// The reference model's flows, advanced by `step` as the kernel's are.
    pub tracker: Tracker,
    // Dropped after the dataplane: its pins go last.
    _pins: PinDir,
}

impl Harness {
    pub fn new(policy: Policy) -> Harness {
        let pins = PinDir::new();
        let mut dataplane = Dataplane::load(&pins.0, &LoadOptions::default()).expect("load the BPF object");
        let tables = compile_policy(&policy).expect("compile the policy");
        dataplane.install(&tables).expect("install the policy");
        dataplane
            .set_dns_servers(&policy.dns_servers)
            .expect("set the resolvers");
        let tracker = Tracker::with_hash_key(dataplane.flow_hash_key());
        Harness {
            dataplane,
            policy,
            tracker,
            _pins: pins,
        }
    }

    /// Replaces the policy with a new generation; tracked flows stay, as in the daemon.
    pub fn set_policy(&mut self, policy: Policy) {
        let tables = compile_policy(&policy).expect("compile the policy");
        self.dataplane.install(&tables).expect("install the policy");
        self.dataplane
            .set_dns_servers(&policy.dns_servers)
            .expect("set the resolvers");
        self.policy = policy;
    }

    /// Runs a model packet laid out as `shape` through the kernel and through the
    /// stateful model, each with the flows the packets before it opened: what the
    /// kernel did and what the model says.
    pub fn step(&mut self, packet: &Packet, shape: &Shape) -> (Outcome, Outcome) {
        let kernel = self.run(packet.hook, &packet::frame(packet, shape));
        let whole = !matches!(shape, Shape::V4FirstFragment | Shape::V6FirstFragment);
        let j = self.tracker.judge_shaped(&self.policy, packet, whole);
        let model = Outcome {
            delivered: j.delivered(self.policy.mode),
            verdict: j.verdict,
            reason: j.reason,
        };
        (kernel, model)
    }

    /// Runs `frame` through the program of `hook` and reads which counter moved.
    pub fn run(&mut self, hook: Hook, frame: &[u8]) -> Outcome {
        self.try_run(hook, frame).expect("test run")
    }

    /// As `run`, but the kernel's refusal to run the frame is returned, not a panic.
    pub fn try_run(&mut self, hook: Hook, frame: &[u8]) -> Result<Outcome, allowgate::dataplane::DataplaneError> {
        let before = self.dataplane.counters().expect("read counters");
        let result = self.dataplane.test_run(hook, frame, 1)?;
        let after = self.dataplane.counters().expect("read counters");
        let delivered = match (hook, result.return_value) {
            (Hook::Ingress, 2) => true,       // XDP_PASS
            (Hook::Ingress, 1) => false,      // XDP_DROP
            (Hook::Egress, u32::MAX) => true, // TC_ACT_UNSPEC: next program, then out
            (Hook::Egress, 2) => false,       // TC_ACT_SHOT
            (h, r) => panic!("unexpected return value {r} from the {h:?} program"),
        };
        let moved: Vec<_> = after
            .by_key
            .iter()
            .filter(|(k, c)| c.packets != before.get(k.0, k.1, k.2).packets)
            .map(|(k, c)| (*k, c.packets - before.get(k.0, k.1, k.2).packets))
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "one frame must move exactly one counter, moved {moved:?}"
        );
        let ((direction, verdict, reason), delta) = moved[0];
        assert_eq!(delta, 1, "one frame counted {delta} times");
        let want_dir = if hook == Hook::Egress {
            abi::DIR_EGRESS
        } else {
            abi::DIR_INGRESS
        };
        assert_eq!(direction, want_dir, "counted under the wrong direction");
        let verdict = if verdict == abi::VERDICT_PASS {
            Verdict::Pass
        } else {
            Verdict::Drop
        };
        Ok(Outcome {
            delivered,
            verdict,
            reason,
        })
    }

    /// What the reference model says of the packet, with the flows tracked so far
    /// (which it does not change: `step` does).
    pub fn expect(&self, packet: &Packet) -> Outcome {
        let j = self.tracker.clone().judge(&self.policy, packet);
        Outcome {
            delivered: j.delivered(self.policy.mode),
            verdict: j.verdict,
            reason: j.reason,
        }
    }

    pub fn mode(&self) -> Mode {
        self.policy.mode
    }
}

/// A system group made for one test (`groupadd`), deleted on drop, pass or fail.
pub struct TempGroup {
    pub name: String,
    pub gid: u32,
}

impl TempGroup {
    pub fn new(prefix: &str) -> TempGroup {
        require_root();
        let name = unique(prefix);
        netns::run("groupadd", &[&name]);
        // The guard exists before anything else can fail, so the group goes in any case.
        let mut group = TempGroup { name, gid: 0 };
        let line = netns::run("getent", &["group", &group.name]);
        group.gid = line
            .trim()
            .split(':')
            .nth(2)
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("no gid in {line:?}"));
        group
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("groupdel").arg(&self.name).status();
    }
}

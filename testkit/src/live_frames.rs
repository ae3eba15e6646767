//! Whether this kernel lets a BPF_PROG_TEST_RUN with `BPF_F_TEST_XDP_LIVE_FRAMES`
//! through, asked here with aya directly rather than through the daemon's own probe,
//! so that a test can hold the daemon's choice of give-back path against it. Hardened
//! kernels (this project's own machines among them) refuse it with EPERM even to root.

use std::sync::OnceLock;

use allowgate_ebpf as abi;
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};

use crate::netns::Netns;

/// `Ok` where live frames are allowed, else why not (the error, with its errno).
/// Asked once per test binary, in a namespace of its own: the frame (a local
/// experimental ethertype on `lo`) is discarded by the stack either way.
pub fn live_frames_allowed() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let ns = Netns::new("agl");
            ns.ip(&["link", "set", "lo", "up"]);
            ns.enter(try_live_frame)
        })
        .clone()
}

fn try_live_frame() -> Result<(), String> {
    let mut ebpf = aya::Ebpf::load(abi::NOOP_OBJ).map_err(|e| format!("cannot load the noop object: {e}"))?;
    let prog: &mut Xdp = ebpf
        .program_mut(abi::PROG_NOOP)
        .ok_or("no noop program")?
        .try_into()
        .map_err(|e| format!("not an XDP program: {e}"))?;
    prog.load().map_err(|e| format!("cannot load the noop program: {e}"))?;
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    // struct xdp_md: data_end = the frame's length, ingress_ifindex = lo (1).
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&1u32.to_ne_bytes());
    let opts = TestRunOptions {
        data_in: Some(&frame),
        ctx_in: Some(&ctx),
        repeat: 1,
        attrs: TestRunAttrs::new().xdp_live_frames(1),
        ..TestRunOptions::new()
    };
    prog.test_run(opts).map(|_| ()).map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text += &format!(": {s}");
            source = s.source();
        }
        text
    })
}

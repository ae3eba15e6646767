//! What opening a flow costs: a test run repeats one frame, and only its first run can
//! open a flow, so this figure is many single runs instead, each the first packet of
//! its own connection (a SYN from a port not used before), next to single runs of the
//! do-nothing program and of a packet whose flow is already open (the refresh every
//! later packet of a connection pays). Single runs include the test run's own
//! overhead, the same for all three: compare them with one another, not with the
//! repeated figures.

use super::*;

pub(crate) struct FlowTimes {
    pub(crate) connections: usize,
    /// Median ns of a single run: the opening SYN, a later packet of the same
    /// connection, and the do-nothing program on the same frame.
    pub(crate) new_ns: f64,
    pub(crate) refresh_ns: f64,
    pub(crate) noop_ns: f64,
    /// Flows the data plane counted as added over the measurement.
    pub(crate) inserted: u64,
}

/// `count` egress SYNs to EU1's portal, each from a port of its own, through the
/// egress program once each; then each again.
pub(crate) fn measure(
    dataplane: &mut Dataplane,
    noop: &mut Noop,
    policy: &Policy,
    count: u16,
) -> anyhow::Result<FlowTimes> {
    let portal = ip("13.80.125.22");
    let before = dataplane.flow_stats()?.unassured_inserts;
    let (mut new, mut again, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..count {
        let packet = tcp(Hook::Egress, portal, 20_000 + i, 443, (true, false), (1, 0));
        check_intent(policy, &packet, Verdict::Pass, Reason::Policy)?;
        let frame = packet::frame(&packet, &packet::Shape::Plain);
        let samples = noop.samples.len();
        base.push(noop.time(&frame, 1)?);
        // Single runs stay out of the repeated figures' noop median.
        noop.samples.truncate(samples);
        for out in [&mut new, &mut again] {
            let result = dataplane.test_run(Hook::Egress, &frame, 1)?;
            if result.return_value != TC_PASS {
                bail!("the first packet of a connection to {portal}:443 was not passed: refusing to time it");
            }
            out.push(result.duration.as_nanos() as f64);
        }
    }
    let inserted = dataplane.flow_stats()?.unassured_inserts - before;
    if inserted < u64::from(count) {
        bail!("{count} new connections opened only {inserted} flows: the new-flow figure would time something else");
    }
    Ok(FlowTimes {
        connections: count.into(),
        new_ns: median(&new),
        refresh_ns: median(&again),
        noop_ns: median(&base),
        inserted,
    })
}

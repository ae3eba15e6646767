//! Reading what a receiving core did: its NAPI kthreads' CPU time and wake-ups, the
//! frames its veth consumed, and where the stack's counters say the frames ended.
//!
//! Capacity is frames per second of the NAPI thread's CPU time (/proc/PID/schedstat),
//! not per second of wall time: the noise of other work on the machine shows up
//! as time the thread did not get, not as frames it did not process, and the receiver
//! need not be saturated.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// What one stretch of traffic did at the receiver.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Measured {
    /// Frames the receiving veth took off its ring.
    pub(crate) frames: u64,
    /// CPU time of its NAPI thread meanwhile.
    pub(crate) cpu_s: f64,
    /// Times the NAPI thread went to sleep and was woken again.
    pub(crate) wakeups: u64,
    /// Frames the generator sent, and for how long.
    pub(crate) offered: u64,
    pub(crate) offered_s: f64,
}

impl Measured {
    pub(crate) fn add(&mut self, other: &Measured) {
        self.frames += other.frames;
        self.cpu_s += other.cpu_s;
        self.wakeups += other.wakeups;
        self.offered += other.offered;
        self.offered_s += other.offered_s;
    }
}

/// A receiver's NAPI kthreads ("napi/<dev>-<napi id>"), read together.
pub(crate) struct NapiThreads(Vec<i32>);

impl NapiThreads {
    /// Finds the kthreads of `dev` and pins them to `cpu`; `realtime` runs them
    /// SCHED_FIFO, ahead of every ordinary task on that core, as NAPI in softirq
    /// context runs on a host: else on a shared machine the thread waits behind other
    /// work for its turn, the veth's ring (256 frames) overflows meanwhile, and the
    /// batch each wake-up finds depends on the machine's load rather than on the
    /// receiver.
    pub(crate) fn find_and_pin(dev: &str, cpu: usize, realtime: bool) -> anyhow::Result<NapiThreads> {
        let threads = NapiThreads(napi_threads(dev)?);
        for &pid in &threads.0 {
            pin_to_cpu(pid, cpu)?;
            if realtime {
                let param = libc::sched_param { sched_priority: 50 };
                // SAFETY: a valid sched_param for an existing thread.
                if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
                    bail!(
                        "cannot run the NAPI kthread {pid} of {dev} SCHED_FIFO: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
        Ok(threads)
    }

    /// (CPU ns, voluntary context switches), summed over the threads.
    pub(crate) fn read(&self) -> anyhow::Result<(u64, u64)> {
        let (mut ns, mut sleeps) = (0, 0);
        for &pid in &self.0 {
            ns += thread_cpu_ns(pid)?;
            sleeps += voluntary_switches(pid)?;
        }
        Ok((ns, sleeps))
    }
}

/// The NAPI kthreads of `dev`.
fn napi_threads(dev: &str) -> anyhow::Result<Vec<i32>> {
    let prefix = format!("napi/{dev}-");
    // The kthread appears as the sysfs write returns, but give it a moment.
    for _ in 0..50 {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm"))
                && comm.trim_end().starts_with(&prefix)
            {
                found.push(pid);
            }
        }
        if !found.is_empty() {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no threaded NAPI kthread for {dev}: the kernel did not start one")
}

/// A thread's time on a CPU in ns (/proc/PID/schedstat, the scheduler's own sum: the
/// utime + stime of /proc/PID/stat are the same time cut to 10 ms, too coarse for a
/// thread that is busy a tenth of a 2 s slice).
fn thread_cpu_ns(pid: i32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("the NAPI kthread {pid} is gone"))?;
    stat.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot parse /proc/{pid}/schedstat"))
}

/// A kthread that sleeps when its ring is empty switches out voluntarily once per
/// sleep: its wake-ups.
fn voluntary_switches(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("the NAPI kthread {pid} is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no voluntary_ctxt_switches in /proc/{pid}/status"))
}

/// Pins a thread (0: the calling one) to one CPU.
pub(crate) fn pin_to_cpu(pid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin thread {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Frames `dev` received, from `ip -s link` output: veth counts every frame its NAPI
/// consumed, whatever XDP did with it.
pub(crate) fn rx_packets(ip_s_link: &str, dev: &str) -> anyhow::Result<u64> {
    let mut lines = ip_s_link.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("RX:") {
            let values = lines.next().unwrap_or_default();
            return values
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("cannot read rx packets of {dev}"));
        }
    }
    bail!("cannot read rx packets of {dev}")
}

/// A counter of /proc/net/snmp, e.g. ("Ip", "InDelivers").
pub(crate) fn snmp_counter(snmp: &str, group: &str, name: &str) -> anyhow::Result<u64> {
    let prefix = format!("{group}:");
    let mut rows = snmp.lines().filter(|l| l.starts_with(&prefix));
    if let (Some(names), Some(values)) = (rows.next(), rows.next()) {
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if n == name {
                return v.parse().with_context(|| format!("cannot parse {group} {name}"));
            }
        }
    }
    bail!("no {group} {name} counter in /proc/net/snmp")
}

/// Reads `read` until two reads 30 ms apart agree (at most 2 s): the NAPI thread, and
/// the stack behind it, finish the ring before a figure is taken; on a loaded machine
/// the thread may wait for its core a while.
pub(crate) fn settled(mut read: impl FnMut() -> anyhow::Result<u64>) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = read()?;
    loop {
        std::thread::sleep(Duration::from_millis(30));
        let now = read()?;
        if now == last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rx_packets_from_ip_s_link() {
        let out = "5: a1r0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n    link/ether 02:00:00:00:0b:02\n    \
                   RX:  bytes packets errors dropped  missed   mcast\n      6000     100      0       0       0       0\n    \
                   TX:  bytes packets errors dropped carrier collsns\n       0       7      0       0       0       0\n";
        assert_eq!(rx_packets(out, "a1r0").unwrap(), 100);
        assert!(rx_packets("nothing", "a1r0").is_err());
    }

    #[test]
    fn reads_a_named_snmp_counter() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives InDelivers\nIp: 2 64 1234 1200\n\
                    Udp: InDatagrams NoPorts\nUdp: 5 77\n";
        assert_eq!(snmp_counter(snmp, "Ip", "InDelivers").unwrap(), 1200);
        assert_eq!(snmp_counter(snmp, "Udp", "NoPorts").unwrap(), 77);
        assert!(snmp_counter(snmp, "Tcp", "InSegs").is_err());
    }

    #[test]
    fn the_calling_thread_reads_its_own_counters() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let before = voluntary_switches(me).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            voluntary_switches(me).unwrap() > before,
            "a sleep is a voluntary switch"
        );
        // Spinning moves the CPU time on (by ticks and switches: poll it), sleeping
        // hardly does.
        let cpu = thread_cpu_ns(me).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while thread_cpu_ns(me).unwrap() < cpu + 20_000_000 {
            assert!(Instant::now() < deadline, "10 s of spinning did not count 20 ms");
            for i in 0..100_000u64 {
                std::hint::black_box(i);
            }
        }
        let cpu = thread_cpu_ns(me).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_ns(me).unwrap() - cpu;
        assert!(slept < 20_000_000, "50 ms asleep counted {slept} ns of CPU");
    }
}

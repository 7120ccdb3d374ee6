//! Where the CPU went during a phase, from Linux's `/proc`: each process
//! of the benchmark, everything else on the machine, and idle time. On
//! other systems every reading is `None` and nothing is printed. Both files
//! count in the same clock ticks (`USER_HZ`), so only ratios are used.

/// Cores used by processes outside the benchmark above which a phase's
/// figures are flagged.
const DISTURBED_CORES: f64 = 0.15;

/// The processes to account for, by label.
pub(super) struct CpuMeter {
    processes: Vec<(&'static str, u32)>,
}

/// Cumulative ticks at one instant.
pub(super) struct CpuSnapshot {
    /// Busy and total ticks of the whole machine, all CPUs.
    machine: (u64, u64),
    processes: Vec<Option<u64>>,
}

impl CpuMeter {
    pub fn new(processes: Vec<(&'static str, Option<u32>)>) -> Self {
        Self {
            processes: processes
                .into_iter()
                .filter_map(|(label, pid)| Some((label, pid?)))
                .collect(),
        }
    }

    pub fn snapshot(&self) -> Option<CpuSnapshot> {
        Some(CpuSnapshot {
            machine: machine_ticks()?,
            processes: self
                .processes
                .iter()
                .map(|(_, pid)| process_ticks(*pid))
                .collect(),
        })
    }

    /// Cores the process labelled `label` used on average since `start`.
    pub fn cores_used(&self, start: &Option<CpuSnapshot>, label: &str) -> Option<f64> {
        let start = start.as_ref()?;
        let end = self.snapshot()?;
        let index = self.processes.iter().position(|(name, _)| *name == label)?;
        let total = end.machine.1.checked_sub(start.machine.1)? as f64;
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let used = end.processes[index]?.checked_sub(start.processes[index]?)? as f64;
        (total > 0.0).then(|| used / (total / cores))
    }

    /// `CPU, cores of 2: server 1.20, receiver 0.30, …, idle 0.10`, or
    /// `None` without readings.
    pub fn report(&self, start: &Option<CpuSnapshot>) -> Option<String> {
        let start = start.as_ref()?;
        let end = self.snapshot()?;
        let busy = end.machine.0.checked_sub(start.machine.0)? as f64;
        let total = end.machine.1.checked_sub(start.machine.1)? as f64;
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        if total <= 0.0 {
            return None;
        }
        // Ticks of all CPUs → cores used on average.
        let per_core = total / cores;
        let mut parts = Vec::new();
        let mut accounted = 0.0;
        for ((label, _), (before, after)) in self
            .processes
            .iter()
            .zip(start.processes.iter().zip(&end.processes))
        {
            if let (Some(before), Some(after)) = (before, after) {
                let used = after.saturating_sub(*before) as f64;
                accounted += used;
                parts.push(format!("{label} {:.2}", used / per_core));
            }
        }
        let other = ((busy - accounted) / per_core).max(0.0);
        parts.push(format!("other processes {other:.2}"));
        parts.push(format!("idle {:.2}", (total - busy) / per_core));
        let mut line = format!("CPU, cores of {cores}: {}", parts.join(", "));
        if other > DISTURBED_CORES {
            line.push_str("\n  warning: other processes took CPU during this phase; its figures are disturbed");
        }
        Some(line)
    }
}

/// (busy, total) from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already counted in user.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// utime + stime of all threads of `pid` from `/proc/{pid}/stat`.
fn process_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted
    // after its closing one, from field 3 (state).
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total);
        assert!(process_ticks(std::process::id()).is_some());
    }
}

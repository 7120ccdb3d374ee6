//! Where the CPU went during a phase, from Linux's `/proc`: each process
//! of the benchmark, everything else on the machine, the time the
//! hypervisor gave this VM's CPUs to other guests (steal), and idle time.
//! On other systems every reading is `None` and nothing is printed. Both
//! files count in the same clock ticks (`USER_HZ`), so only ratios are used.

/// Cores used by processes outside the benchmark, or stolen by the
/// hypervisor, above which a phase's figures are flagged.
const DISTURBED_CORES: f64 = 0.15;

/// The processes to account for, by label.
pub(super) struct CpuMeter {
    processes: Vec<(&'static str, u32)>,
}

/// Cumulative ticks at one instant.
pub(super) struct CpuSnapshot {
    machine: MachineTicks,
    processes: Vec<Option<ProcessTicks>>,
}

/// CPU split into user space and the kernel (system calls, and, on
/// kernels without IRQ time accounting, the softirq work charged to the
/// process that was running), in the caller's unit: cores used on
/// average, or µs per event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CpuSplit {
    pub user: f64,
    pub kernel: f64,
}

impl CpuSplit {
    pub fn total(self) -> f64 {
        self.user + self.kernel
    }

    pub fn scaled(self, factor: f64) -> Self {
        Self {
            user: self.user * factor,
            kernel: self.kernel * factor,
        }
    }
}

impl std::iter::Sum for CpuSplit {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(
            Self {
                user: 0.0,
                kernel: 0.0,
            },
            |sum, used| Self {
                user: sum.user + used.user,
                kernel: sum.kernel + used.kernel,
            },
        )
    }
}

/// A process's cumulative user and system ticks, all its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessTicks {
    user: u64,
    system: u64,
}

impl ProcessTicks {
    fn total(self) -> u64 {
        self.user.saturating_add(self.system)
    }
}

/// Ticks of the whole machine, all CPUs, from the first line of
/// `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MachineTicks {
    /// Running this guest's processes and kernel.
    busy: u64,
    /// Waiting while the hypervisor ran something else on the CPU: on a
    /// shared VM, a phase with steal ran on slower, colder CPUs.
    steal: u64,
    total: u64,
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
        self.cores_used_split(start, label).map(CpuSplit::total)
    }

    /// [`CpuMeter::cores_used`], split into user space and the kernel.
    pub fn cores_used_split(&self, start: &Option<CpuSnapshot>, label: &str) -> Option<CpuSplit> {
        let start = start.as_ref()?;
        let end = self.snapshot()?;
        let index = self.processes.iter().position(|(name, _)| *name == label)?;
        let machine_ticks = end.machine.total.checked_sub(start.machine.total)?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cores_between(
            start.processes[index]?,
            end.processes[index]?,
            machine_ticks,
            cores,
        )
    }

    /// `CPU, cores of 2: server 1.20, receiver 0.30, …, steal 0.00,
    /// idle 0.10`, or `None` without readings.
    pub fn report(&self, start: &Option<CpuSnapshot>) -> Option<String> {
        let start = start.as_ref()?;
        let end = self.snapshot()?;
        let busy = end.machine.busy.checked_sub(start.machine.busy)? as f64;
        let steal = end.machine.steal.checked_sub(start.machine.steal)? as f64;
        let total = end.machine.total.checked_sub(start.machine.total)? as f64;
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
                let used = after.total().saturating_sub(before.total()) as f64;
                accounted += used;
                parts.push(format!("{label} {:.2}", used / per_core));
            }
        }
        let other = ((busy - accounted) / per_core).max(0.0);
        let stolen = steal / per_core;
        parts.push(format!("other processes {other:.2}"));
        parts.push(format!("steal {stolen:.2}"));
        parts.push(format!("idle {:.2}", (total - busy - steal) / per_core));
        let mut line = format!("CPU, cores of {cores}: {}", parts.join(", "));
        if other > DISTURBED_CORES {
            line.push_str("\n  warning: other processes took CPU during this phase; its figures are disturbed");
        }
        if stolen > DISTURBED_CORES {
            line.push_str("\n  warning: the hypervisor gave this VM's CPUs to other guests during this phase (steal); its figures are disturbed");
        }
        Some(line)
    }
}

/// Cores a process used on average between two readings of its ticks,
/// over `machine_ticks` of all `cores` together. `None` if its counters
/// went backwards (another process under a reused pid) or no time passed.
fn cores_between(
    before: ProcessTicks,
    after: ProcessTicks,
    machine_ticks: u64,
    cores: usize,
) -> Option<CpuSplit> {
    if machine_ticks == 0 {
        return None;
    }
    let per_core = machine_ticks as f64 / cores.max(1) as f64;
    Some(CpuSplit {
        user: after.user.checked_sub(before.user)? as f64 / per_core,
        kernel: after.system.checked_sub(before.system)? as f64 / per_core,
    })
}

fn machine_ticks() -> Option<MachineTicks> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(text.lines().next()?)
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq
/// softirq steal [guest guest_nice]. guest is counted in user already and
/// guest_nice in nice; kernels before 2.6.11 have no steal field.
fn parse_machine_ticks(line: &str) -> Option<MachineTicks> {
    let fields: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user, nice, system and idle are there on every kernel.
    if fields.len() < 4 {
        return None;
    }
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    let steal = field(7);
    let idle = field(3).checked_add(field(4))?;
    let total = fields
        .iter()
        .take(8)
        .try_fold(0u64, |sum, &ticks| sum.checked_add(ticks))?;
    Some(MachineTicks {
        busy: total.checked_sub(idle)?.checked_sub(steal)?,
        steal,
        total,
    })
}

/// utime and stime of all threads of `pid` from `/proc/{pid}/stat`.
fn process_ticks(pid: u32) -> Option<ProcessTicks> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&text)
}

/// The utime and stime fields (14 and 15) of a `/proc/PID/stat` line.
fn parse_process_ticks(text: &str) -> Option<ProcessTicks> {
    // The command name may hold spaces and parentheses: fields are counted
    // after its closing one, from field 3 (state).
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(ProcessTicks {
        user: fields.get(11)?.parse().ok()?,
        system: fields.get(12)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let machine = machine_ticks().unwrap();
        assert!(machine.busy + machine.steal <= machine.total);
        assert!(process_ticks(std::process::id()).is_some());
    }

    #[test]
    fn user_and_system_ticks_are_read_after_the_command_name() {
        // A command name with spaces and a parenthesis; utime 4321 and
        // stime 1234 are fields 14 and 15.
        let line = "4242 (tokio (x) w) S 1 4242 4242 0 -1 4194560 500 0 0 0 4321 1234 0 0 20 0 6 0 100 0 0";
        assert_eq!(
            parse_process_ticks(line),
            Some(ProcessTicks {
                user: 4321,
                system: 1234,
            })
        );
        assert_eq!(parse_process_ticks("4242 (name) S 1 2 3"), None);
        assert_eq!(parse_process_ticks("no parenthesis"), None);
        assert_eq!(
            parse_process_ticks("1 (a) S 1 1 1 0 -1 0 0 0 0 0 x 5 0"),
            None
        );
    }

    #[test]
    fn cores_between_readings_keep_user_and_kernel_apart() {
        let before = ProcessTicks {
            user: 1_000,
            system: 500,
        };
        let after = ProcessTicks {
            user: 1_300,
            system: 550,
        };
        // 400 ticks of 2 cores: 200 ticks a core.
        assert_eq!(
            cores_between(before, after, 400, 2),
            Some(CpuSplit {
                user: 1.5,
                kernel: 0.25,
            })
        );
        assert_eq!(cores_between(before, after, 0, 2), None);
        assert_eq!(cores_between(after, before, 400, 2), None);
    }

    #[test]
    fn splits_add_up_per_part_and_a_missing_reading_spoils_the_sum() {
        let node = CpuSplit {
            user: 0.5,
            kernel: 0.25,
        };
        let two: Option<CpuSplit> = [Some(node), Some(node)].into_iter().sum();
        assert_eq!(
            two,
            Some(CpuSplit {
                user: 1.0,
                kernel: 0.5,
            })
        );
        assert_eq!(
            two.map(|split| split.scaled(2.0)),
            Some(CpuSplit {
                user: 2.0,
                kernel: 1.0,
            })
        );
        let one_missing: Option<CpuSplit> = [Some(node), None].into_iter().sum();
        assert_eq!(one_missing, None);
    }

    #[test]
    fn steal_is_counted_apart_from_busy_and_idle() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let line = "cpu  100 5 40 800 20 3 2 30 7 0";
        assert_eq!(
            parse_machine_ticks(line),
            Some(MachineTicks {
                busy: 150,
                steal: 30,
                total: 1000,
            })
        );
    }

    #[test]
    fn older_kernels_without_steal_and_lines_that_are_not_the_cpu_line() {
        assert_eq!(
            parse_machine_ticks("cpu  10 0 5 85"),
            Some(MachineTicks {
                busy: 15,
                steal: 0,
                total: 100,
            })
        );
        for line in [
            "",
            "cpu ",
            "cpu  1 2 3",
            "cpu0 10 0 5 85 0 0 0 0",
            "intr 12345",
            "cpu  10 0 five 85",
            "cpu  -1 0 5 85",
            "cpu  18446744073709551615 1 0 0 0 0 0 0",
        ] {
            assert_eq!(parse_machine_ticks(line), None, "{line:?}");
        }
    }
}

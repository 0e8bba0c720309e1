//! CPU time of the processes under test, from `/proc/<pid>/stat` (utime +
//! stime of the whole thread group) and of the machine, from `/proc/stat`,
//! and their I/O from `/proc/<pid>/io`, sampled at the start and the end of
//! a phase's measured window.

use std::collections::BTreeMap;

use serde::Serialize;

/// The processes whose CPU a phase reports, by role; a role's processes
/// are summed (every errata replica).
#[derive(Debug, Clone, Default)]
pub struct Processes(pub Vec<(&'static str, u32)>);

/// Every role a phase reports, in order, present or not.
pub const ROLES: [&str; 4] = ["errata", "redis", "cassandra", "loadgen"];

/// CPU seconds used so far: by role, and by the whole machine (busy and in
/// all).
#[derive(Debug, Clone)]
pub struct Sample {
    by_role: BTreeMap<&'static str, f64>,
    io_by_role: BTreeMap<&'static str, Io>,
    machine_busy: f64,
}

/// A process's I/O counters (`/proc/<pid>/io`), in bytes: what it passed
/// through read(2)/write(2) (`rchar`, `wchar`: file reads served from the
/// page cache included; not socket traffic sent with send/recv, so not
/// network bytes), and what reached or came from the disk (`write_bytes`,
/// `read_bytes`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Io {
    pub read_chars: f64,
    pub written_chars: f64,
    pub disk_read: f64,
    pub disk_written: f64,
}

impl Io {
    fn of(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
                .trim()
                .parse()
                .ok()
        };
        Some(Self {
            read_chars: field("rchar")?,
            written_chars: field("wchar")?,
            disk_read: field("read_bytes")?,
            disk_written: field("write_bytes")?,
        })
    }

    fn add(&mut self, other: Io) {
        self.read_chars += other.read_chars;
        self.written_chars += other.written_chars;
        self.disk_read += other.disk_read;
        self.disk_written += other.disk_written;
    }

    fn per_request(self, since: Io, requests: u64) -> Io {
        let per = |after: f64, before: f64| {
            if requests > 0 {
                (after - before) / requests as f64
            } else {
                0.0
            }
        };
        Io {
            read_chars: per(self.read_chars, since.read_chars),
            written_chars: per(self.written_chars, since.written_chars),
            disk_read: per(self.disk_read, since.disk_read),
            disk_written: per(self.disk_written, since.disk_written),
        }
    }
}

/// What a phase's measured window used.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// CPU seconds of each role during the window (a role whose process
    /// is not known is absent).
    pub cpu_seconds: BTreeMap<&'static str, f64>,
    /// Milliseconds of CPU per measured request, by role.
    pub cpu_ms_per_request: BTreeMap<&'static str, f64>,
    /// Bytes per measured request, by role (see [`Io`]).
    pub io_bytes_per_request: BTreeMap<&'static str, Io>,
    /// Busy CPU seconds of the whole machine (every process, the other
    /// work on it included) and its average busy cores.
    pub machine_cpu_seconds: f64,
    pub machine_busy_cores: f64,
    pub machine_cpu_ms_per_request: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds (None when it is gone).
fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Busy seconds of every CPU of the machine (all but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: f64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / clock_ticks()
}

impl Processes {
    pub fn sample(&self) -> Sample {
        let mut by_role = BTreeMap::new();
        let mut io_by_role: BTreeMap<&'static str, Io> = BTreeMap::new();
        for (role, pid) in &self.0 {
            if let Some(seconds) = process_seconds(*pid) {
                *by_role.entry(*role).or_insert(0.0) += seconds;
            }
            if let Some(io) = Io::of(*pid) {
                io_by_role.entry(*role).or_default().add(io);
            }
        }
        if let Some(seconds) = process_seconds(std::process::id()) {
            by_role.insert("loadgen", seconds);
        }
        Sample {
            by_role,
            io_by_role,
            machine_busy: machine_busy_seconds(),
        }
    }
}

impl Sample {
    /// What was used from `self` to `end`, over `seconds` and `requests`.
    pub fn usage(&self, end: &Sample, seconds: f64, requests: u64) -> Usage {
        let per = |s: f64| {
            if requests > 0 {
                1000.0 * s / requests as f64
            } else {
                0.0
            }
        };
        let cpu_seconds: BTreeMap<&'static str, f64> = end
            .by_role
            .iter()
            .filter_map(|(role, after)| Some((*role, after - self.by_role.get(role)?)))
            .collect();
        let machine = end.machine_busy - self.machine_busy;
        let io_bytes_per_request = end
            .io_by_role
            .iter()
            .filter_map(|(role, after)| {
                Some((
                    *role,
                    after.per_request(*self.io_by_role.get(role)?, requests),
                ))
            })
            .collect();
        Usage {
            cpu_ms_per_request: cpu_seconds.iter().map(|(r, s)| (*r, per(*s))).collect(),
            io_bytes_per_request,
            cpu_seconds,
            machine_cpu_seconds: machine,
            machine_busy_cores: if seconds > 0.0 {
                machine / seconds
            } else {
                0.0
            },
            machine_cpu_ms_per_request: per(machine),
        }
    }
}

impl Usage {
    pub fn print(&self) {
        let roles = ROLES
            .iter()
            .map(|role| match self.cpu_ms_per_request.get(role) {
                Some(ms) => format!("{role} {ms:.3}"),
                None => format!("{role} -"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  CPU ms per request: {roles}; machine {:.3} ({:.2} busy cores)",
            self.machine_cpu_ms_per_request, self.machine_busy_cores
        );
        if let Some(io) = self.io_bytes_per_request.get("cassandra") {
            println!(
                "  Cassandra disk per request: {:.0} bytes written (commit log, flushes, \
                 compactions), {:.0} read",
                io.disk_written, io.disk_read
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_some_cpu() {
        let watch = Processes::default();
        let start = watch.sample();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let usage = start.usage(&watch.sample(), 1.0, 10);
        assert!(usage.cpu_seconds["loadgen"] >= 0.0);
        assert!(usage.machine_cpu_seconds >= 0.0);
    }
}

//! CPU time of the processes under test, from `/proc/<pid>/stat` (utime +
//! stime of the whole thread group) and of the machine, from `/proc/stat`,
//! their I/O from `/proc/<pid>/io`, and the bytes through the servers'
//! listening ports (`ss -ti`), sampled at the start and the end of a
//! phase's measured window.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// The processes whose CPU a phase reports, by role; a role's processes
/// are summed (every errata replica). And the ports whose traffic it
/// reports, by the role of the server listening on them.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    pub pids: Vec<(&'static str, u32)>,
    pub ports: Vec<(&'static str, u16)>,
}

/// Every role a phase reports, in order, present or not.
pub const ROLES: [&str; 4] = ["errata", "redis", "cassandra", "loadgen"];

/// CPU seconds used so far: by role, and by the whole machine (busy and in
/// all).
#[derive(Debug, Clone)]
pub struct Sample {
    by_role: BTreeMap<&'static str, f64>,
    io_by_role: BTreeMap<&'static str, Io>,
    net_by_role: BTreeMap<&'static str, Connections>,
    machine_busy: f64,
}

/// The bytes through the established TCP connections to a server's port,
/// as its side of them counts (`ss -ti`'s `bytes_received`, requests in,
/// and `bytes_acked`, answers delivered): TCP payload, no headers. A
/// window counts each connection open at its end from where it stood at
/// the window's start (from its opening, if it opened since); connections
/// that close during a window drop out of its count (the clients here
/// keep theirs open while they measure).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Net {
    pub received: f64,
    pub sent: f64,
}

/// A port's connections (local and peer address) and their byte counts.
type Connections = HashMap<(String, String), Net>;

impl Net {
    fn of(port: u16) -> Option<Connections> {
        let out = std::process::Command::new("ss")
            .args(["-tinH", "state", "established"])
            .arg(format!("( sport = :{port} )"))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(Self::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// `ss -tinH state established`: a line per connection (Recv-Q,
    /// Send-Q, local, peer), then an indented line of its TCP info.
    fn parse(text: &str) -> Connections {
        let mut connections = Connections::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if !line.starts_with(char::is_whitespace) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                current = match fields[..] {
                    [_, _, local, peer, ..] => Some((local.to_owned(), peer.to_owned())),
                    _ => None,
                };
                continue;
            }
            let Some(key) = &current else { continue };
            let net = connections.entry(key.clone()).or_default();
            for token in line.split_whitespace() {
                let field = |name: &str| token.strip_prefix(name)?.parse::<f64>().ok();
                if let Some(n) = field("bytes_received:") {
                    net.received += n;
                } else if let Some(n) = field("bytes_acked:") {
                    net.sent += n;
                }
            }
        }
        connections
    }

    /// What the connections open at `end` moved since `start`, per request.
    fn per_request(start: &Connections, end: &Connections, requests: u64) -> Net {
        let mut total = Net::default();
        for (key, after) in end {
            let before = start.get(key).copied().unwrap_or_default();
            total.received += (after.received - before.received).max(0.0);
            total.sent += (after.sent - before.sent).max(0.0);
        }
        Net {
            received: per_request(total.received, requests),
            sent: per_request(total.sent, requests),
        }
    }
}

/// `total` shared by `requests` (0 without any).
fn per_request(total: f64, requests: u64) -> f64 {
    if requests > 0 {
        total / requests as f64
    } else {
        0.0
    }
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
        let per = |after: f64, before: f64| per_request(after - before, requests);
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
    /// Network bytes per measured request through each server's port, by
    /// the server's role (see [`Net`]).
    pub net_bytes_per_request: BTreeMap<&'static str, Net>,
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
        for (role, pid) in &self.pids {
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
        let mut net_by_role: BTreeMap<&'static str, Connections> = BTreeMap::new();
        for (role, port) in &self.ports {
            if let Some(connections) = Net::of(*port) {
                net_by_role.entry(*role).or_default().extend(connections);
            }
        }
        Sample {
            by_role,
            io_by_role,
            net_by_role,
            machine_busy: machine_busy_seconds(),
        }
    }
}

/// `change(start, end)` of each role sampled at both ends of a window (a
/// role missing from either is left out).
fn between<T, U>(
    start: &BTreeMap<&'static str, T>,
    end: &BTreeMap<&'static str, T>,
    change: impl Fn(&T, &T) -> U,
) -> BTreeMap<&'static str, U> {
    end.iter()
        .filter_map(|(role, after)| Some((*role, change(start.get(role)?, after))))
        .collect()
}

impl Sample {
    /// What was used from `self` to `end`, over `seconds` and `requests`.
    pub fn usage(&self, end: &Sample, seconds: f64, requests: u64) -> Usage {
        let per = |seconds: f64| per_request(1000.0 * seconds, requests);
        let cpu_seconds = between(&self.by_role, &end.by_role, |before, after| after - before);
        let machine = end.machine_busy - self.machine_busy;
        let io_bytes_per_request = between(&self.io_by_role, &end.io_by_role, |before, after| {
            after.per_request(*before, requests)
        });
        let net_bytes_per_request =
            between(&self.net_by_role, &end.net_by_role, |before, after| {
                Net::per_request(before, after, requests)
            });
        Usage {
            net_bytes_per_request,
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
        let net = ROLES
            .iter()
            .filter_map(|role| {
                let n = self.net_bytes_per_request.get(role)?;
                Some(format!("{role} {:.0} in / {:.0} out", n.received, n.sent))
            })
            .collect::<Vec<_>>();
        if !net.is_empty() {
            println!("  network bytes per request: {}", net.join(", "));
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

    #[test]
    fn a_ports_bytes_are_counted_on_the_servers_side() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let watch = Processes {
            pids: vec![],
            ports: vec![("redis", port)],
        };
        let start = watch.sample();
        client.write_all(&[7; 1000]).unwrap();
        let mut got = [0; 1000];
        server.read_exact(&mut got).unwrap();
        server.write_all(&[9; 300]).unwrap();
        let mut answer = [0; 300];
        client.read_exact(&mut answer).unwrap();
        let usage = start.usage(&watch.sample(), 1.0, 2);
        let net = usage.net_bytes_per_request["redis"];
        assert_eq!((net.received, net.sent), (500.0, 150.0));
    }

    #[test]
    fn ss_output_is_read_per_connection() {
        let start = "0 0 127.0.0.1:9042 127.0.0.1:5000\n\t cubic bytes_sent:12 bytes_acked:10 \
                     bytes_received:40 segs_out:3\n0 0 127.0.0.1:9042 127.0.0.1:5001\n\t \
                     bytes_acked:5 bytes_received:2\n";
        let start = Net::parse(start);
        assert_eq!(start.len(), 2);
        // :5001 closed, :5000 moved on, :5002 opened.
        let end = "0 0 127.0.0.1:9042 127.0.0.1:5000\n\t bytes_acked:110 bytes_received:140\n\
                   0 0 127.0.0.1:9042 127.0.0.1:5002\n\t bytes_acked:1 bytes_received:2\n";
        let net = Net::per_request(&start, &Net::parse(end), 2);
        assert_eq!((net.received, net.sent), (51.0, 50.5));
    }
}

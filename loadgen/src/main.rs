//! errata-loadgen: drives a real errata server and reports what it sustains.
//!
//!   cargo run --release -p errata-loadgen -- --spawn target/release/errata \
//!       --learners 10000 --connections 32 --duration 20
//!
//! 1. Population: `--learners` learners, each with a conversation and an
//!    utterance, created through the API (or, with `--bulk`, by the spawned
//!    binary's `errata seed` before it serves).
//! 2. For each connection count of `--connections`: the `/healthz` ceiling,
//!    then each `--ingest-share` mix of POST /simulate-and-generate and
//!    GET /generate-exercise, learners drawn from a Zipf distribution.
//! 3. Per endpoint: req/s, p50/p99/p999 from HDR histograms, errors and the
//!    ratio to the ceiling; the server's memory; what each request cost the
//!    server (CQL and Redis round trips, from its `/metrics`); then the
//!    correctness check: every touched learner's frequencies add up to the
//!    points acknowledged (in cql mode after `errata flush`).
//! 4. Before each mix, a quiet start (`quiet.rs`): errata's flushers have
//!    nothing left, and `--settle COMMAND` succeeds; the waits are reported.
//!    Each phase reports the CPU per request of errata, its Redis, the CQL
//!    server (`--cassandra-pid`) and the load generator over its measured
//!    window, and the machine's; the CQL server's disk bytes; and the
//!    network bytes each server's port received and sent (`cpu.rs`).
//! 5. `--raw` (cql): after the check, each mix again as raw CQL through the
//!    driver, errata's statements per request without errata (`raw.rs`);
//!    each errata mix gets its `ratio_to_raw`. `--raw-rewrites` runs each
//!    raw mix with ingests again as errata's batch was before its replica
//!    remembered its writes.
//!
//! `--store cql` runs the spawned binary as `--replicas` replicas on the
//! CQL nodes of `--cql-nodes`, in a fresh keyspace, with a Redis of its own
//! (or `--redis-url`).

mod cpu;
mod drive;
mod metrics;
mod plot;
mod population;
mod quiet;
mod raw;
mod server;
mod stack;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::Value;

use drive::{PhaseConfig, PhaseResult, Population, Workload};

#[derive(Debug, Parser)]
#[command(name = "errata-loadgen", about = "Load generator for errata")]
struct Args {
    /// Start this errata binary (fresh temporary data dir, free ports).
    #[arg(long, conflicts_with = "url")]
    spawn: Option<PathBuf>,
    /// The store of the spawned binary: `embedded` or `cql`.
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "cql"], requires = "spawn")]
    store: String,
    /// cql: the CQL contact points (e.g. a node `scripts/cassandra` started).
    #[arg(long, default_value = "127.0.0.1:9042")]
    cql_nodes: String,
    /// cql: use this Redis instead of starting one.
    #[arg(long)]
    redis_url: Option<String>,
    /// cql: how many `errata serve` replicas; the connections are spread
    /// over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Target a running server instead, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    url: Option<String>,
    /// With --url: the server's process id, to report its memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Keep the spawned server's data directory (printed at the end).
    #[arg(long)]
    keep_data: bool,
    /// How many learners to create.
    #[arg(long, default_value_t = 10_000)]
    learners: usize,
    /// Utterances per learner (in one conversation); each error report is
    /// about one of them, drawn at random.
    #[arg(long, default_value_t = 4)]
    utterances: usize,
    /// Have the spawned binary write the learners straight into its fresh
    /// data directory, or with --store cql its fresh keyspace (`errata
    /// seed`), before it serves: fast setup for large populations (needs
    /// --spawn).
    #[arg(long, alias = "bulk-sqlite", requires = "spawn")]
    bulk: bool,
    /// Requests in flight while creating learners through the API.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
    /// Connection counts to measure, comma-separated (a sweep), e.g. 1,8,32,64.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    connections: Vec<usize>,
    /// Measured seconds of each workload phase.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Unmeasured seconds before each phase.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured seconds of the /healthz ceiling at each connection count.
    #[arg(long, default_value_t = 5.0)]
    healthz_duration: f64,
    /// Share of ingest requests in each workload phase, comma-separated:
    /// 1 = ingest only, 0 = practice only, 0.5 = half and half.
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    ingest_share: Vec<f64>,
    /// Zipf exponent of the learner distribution (higher: more skewed).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    #[arg(long, default_value_t = 5)]
    top_n: u32,
    #[arg(long, default_value_t = 2)]
    per_error: u32,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw throughput and p99 against connection count into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Skip the end-of-run correctness check.
    #[arg(long)]
    no_check: bool,
    /// A shell command to run after the load and before the correctness
    /// check (e.g. `errata flush`, so that the check reads durable counts);
    /// the run fails if it fails.
    #[arg(long, value_name = "COMMAND")]
    before_check: Option<String>,
    /// A shell command to run after the setup and before the first
    /// measurement (e.g. one that waits for the CQL server's compactions of
    /// a bulk-written population); the run fails if it fails.
    #[arg(long, value_name = "COMMAND")]
    after_setup: Option<String>,
    /// A shell command that must succeed before each measured workload
    /// phase (after errata's flushers have nothing left), e.g. one that
    /// checks that the CQL server has no compactions pending; run again
    /// every 2 s until it succeeds, at most --quiet-timeout (then the run
    /// fails).
    #[arg(long, value_name = "COMMAND")]
    settle: Option<String>,
    /// Longest wait, in seconds, for a quiet start before each workload
    /// phase: for errata's flushers (then the phase goes ahead, noted) and
    /// for --settle (then the run fails).
    #[arg(long, default_value_t = 600.0)]
    quiet_timeout: f64,
    /// The CQL server's process id, to report its CPU per request.
    #[arg(long, value_name = "PID")]
    cassandra_pid: Option<u32>,
    /// cql: after errata's phases and the correctness check, one raw phase
    /// per --ingest-share at each --connections: the same CQL work per
    /// request, issued straight through the driver (no HTTP, no Redis, no
    /// errata), in the same keyspace with the same learners; each errata
    /// mix gets its ratio to the raw one.
    #[arg(long, requires = "spawn")]
    raw: bool,
    /// --raw: how often the emulated flusher sends the buffered counts, in
    /// milliseconds (errata's ERRATA_FLUSH_INTERVAL_MS default).
    #[arg(long, default_value_t = 1000)]
    raw_flush_interval_ms: u64,
    /// --raw: after each raw phase with ingest, the same phase again with
    /// every bucket row and spelling written again, as errata's batch was
    /// before its replica remembered its writes (`raw+rewrites` rows): the
    /// data-model lever's A/B in one run.
    #[arg(long, requires = "raw")]
    raw_rewrites: bool,
}

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
    memory_total_kib: u64,
    loadavg_before: String,
    loadavg_after: String,
}

#[derive(Debug, Serialize)]
struct Memory {
    after: String,
    replica: usize,
    vm_rss_kib: u64,
    vm_hwm_kib: u64,
    rss_anon_kib: u64,
    rss_file_kib: u64,
}

#[derive(Debug, Serialize)]
struct Check {
    learners_touched: usize,
    acknowledged_points: u64,
    counted_points: u64,
    mismatched_learners: usize,
    passed: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    learners: usize,
    store: String,
    replicas: usize,
    setup: String,
    setup_seconds: f64,
    zipf_exponent: f64,
    phases: Vec<PhaseResult>,
    server_memory: Vec<Memory>,
    check: Option<Check>,
}

fn machine(loadavg_before: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned(),
        memory_total_kib: meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        loadavg_before,
        loadavg_after: loadavg(),
    }
}

/// The port of an address: `http://127.0.0.1:8000`, `redis://h:6379/0`,
/// `127.0.0.1:9042`.
fn port_of(address: &str) -> Option<u16> {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let host_port = rest.split('/').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    validate(&args)?;
    let loadavg_before = loadavg();
    eprintln!("errata-loadgen: load average before: {loadavg_before}");

    let setup_started = Instant::now();
    let setup = set_up(&args).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    run_hook("after the setup", args.after_setup.as_deref())?;
    let pids: Vec<u32> = if setup.spawned.is_empty() {
        args.server_pid.into_iter().collect()
    } else {
        setup.spawned.iter().map(|s| s.pid).collect()
    };

    // Zipf rank -> learner: shuffled, so heavy learners are spread over the
    // id space rather than all created first.
    let mut learners = setup.learners.clone();
    learners.shuffle(&mut rand::rng());
    let population = Arc::new(Population::new(learners));

    let mut processes = cpu::Processes {
        pids: pids.iter().map(|&pid| ("errata", pid)).collect(),
        ports: setup
            .bases
            .iter()
            .filter_map(|base| port_of(base))
            .map(|port| ("errata", port))
            .collect(),
    };
    if let Some(stack) = &setup.stack {
        if let Some(pid) = stack.redis_pid() {
            processes.pids.push(("redis", pid));
        }
        processes
            .ports
            .extend(port_of(&stack.redis_url).map(|p| ("redis", p)));
        processes.ports.extend(
            stack
                .nodes
                .split(',')
                .filter_map(port_of)
                .map(|p| ("cassandra", p)),
        );
    }
    if let Some(pid) = args.cassandra_pid {
        processes.pids.push(("cassandra", pid));
    }
    let (mut phases, memory) = measure(&args, &setup.bases, &population, &pids, &processes).await?;
    if let (Some(stack), Some(binary)) = (&setup.stack, &args.spawn) {
        stack.run(binary, "flush")?;
    }
    run_hook("before the check", args.before_check.as_deref())?;
    let check = if args.no_check {
        None
    } else {
        Some(check(&setup.bases[0], &population).await?)
    };
    // After the check: the raw phases' counts are not errata's.
    if let (true, Some(stack)) = (args.raw, &setup.stack) {
        let raw = measure_raw(&args, stack, &setup.bases, &population, &processes).await?;
        compare(&mut phases, raw);
    }
    let report = Report {
        machine: machine(loadavg_before),
        learners: args.learners,
        store: args.store.clone(),
        replicas: setup.bases.len(),
        setup: setup.kind.into(),
        setup_seconds,
        zipf_exponent: args.zipf,
        phases,
        server_memory: memory,
        check,
    };
    write_report(&args, &report)?;
    for s in setup.spawned {
        if args.keep_data {
            println!("data kept in {}", s.data_dir.display());
        }
        s.stop().await;
    }
    if let Some(stack) = setup.stack {
        stack.stop().await;
    }
    if report.check.as_ref().is_some_and(|c| !c.passed) {
        bail!("the correctness check failed");
    }
    Ok(())
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if args.utterances == 0 {
        bail!("--utterances must be at least 1");
    }
    if args.learners == 0 {
        bail!("--learners must be at least 1");
    }
    if args.connections.contains(&0) {
        bail!("--connections must be at least 1");
    }
    if args.replicas == 0 || (args.replicas > 1 && args.store != "cql") {
        bail!("--replicas must be 1, or more with --store cql");
    }
    if args.raw && args.store != "cql" {
        bail!("--raw needs --store cql");
    }
    Ok(())
}

/// The servers under test and their learners.
struct Setup {
    spawned: Vec<server::Spawned>,
    /// cql mode: the Redis and keyspace the replicas share.
    stack: Option<stack::Cql>,
    bases: Vec<String>,
    learners: Vec<population::Learner>,
    /// How the learners were made: "api" or "bulk".
    kind: &'static str,
}

async fn set_up(args: &Args) -> anyhow::Result<Setup> {
    let Some(binary) = &args.spawn else {
        let Some(url) = &args.url else {
            bail!("give --spawn PATH or --url URL");
        };
        let base = url.trim_end_matches('/').to_owned();
        let learners = via_api(args, &base).await?;
        return Ok(Setup {
            spawned: Vec::new(),
            stack: None,
            bases: vec![base],
            learners,
            kind: "api",
        });
    };
    let stack = if args.store == "cql" {
        let stack = stack::Cql::start(&args.cql_nodes, args.redis_url.as_deref()).await?;
        eprintln!("  keyspace {} on {}", stack.keyspace, stack.nodes);
        stack.run(binary, "migrate")?;
        Some(stack)
    } else {
        None
    };
    let env = stack.as_ref().map(stack::Cql::env).unwrap_or_default();
    let seed =
        |env: &[(String, String)]| population::bulk(binary, env, args.learners, args.utterances);
    let mut spawned = Vec::new();
    let mut bulk = None;
    if stack.is_some() && args.bulk {
        // One keyspace for every replica: seeded once.
        bulk = Some(seed(&env)?);
    }
    for replica in 0..args.replicas {
        let data_dir = server::temp_data_dir()?;
        if args.bulk && stack.is_none() {
            bulk = Some(seed(&[
                ("ERRATA_STORE".to_owned(), "embedded".to_owned()),
                ("ERRATA_DATA_DIR".to_owned(), data_dir.display().to_string()),
            ])?);
        }
        let port = server::free_port()?;
        let name = format!("replica-{replica}");
        let server =
            server::Spawned::start(binary, data_dir, &name, port, &env, args.keep_data).await?;
        eprintln!(
            "  server: pid {} on 127.0.0.1:{port}, data in {}",
            server.pid,
            server.data_dir.display()
        );
        spawned.push((server, format!("http://127.0.0.1:{port}")));
    }
    let bases: Vec<String> = spawned.iter().map(|(_, base)| base.clone()).collect();
    let (learners, kind) = match bulk {
        Some(learners) => (learners, "bulk"),
        None => (via_api(args, &bases[0]).await?, "api"),
    };
    Ok(Setup {
        spawned: spawned.into_iter().map(|(server, _)| server).collect(),
        stack,
        bases,
        learners,
        kind,
    })
}

async fn via_api(args: &Args, base: &str) -> anyhow::Result<Vec<population::Learner>> {
    population::via_api(base, args.learners, args.utterances, args.setup_concurrency).await
}

fn phase_config(
    args: &Args,
    bases: &[String],
    workload: Workload,
    connections: usize,
    raw: Option<Arc<raw::Raw>>,
    processes: &cpu::Processes,
) -> PhaseConfig {
    let duration = match workload {
        Workload::Healthz => args.healthz_duration,
        Workload::Mix(_) => args.duration,
    };
    PhaseConfig {
        bases: bases.to_vec(),
        workload,
        connections,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(duration),
        zipf_exponent: args.zipf,
        top_n: args.top_n,
        per_error: args.per_error,
        raw,
        cpu: processes.clone(),
    }
}

/// Waits for a quiet start (see `quiet.rs`).
async fn quiet_start(
    args: &Args,
    client: &reqwest::Client,
    bases: &[String],
) -> anyhow::Result<quiet::QuietStart> {
    let timeout = Duration::from_secs_f64(args.quiet_timeout);
    quiet::wait(client, bases, args.settle.as_deref(), timeout).await
}

/// The raw phases: for each connection count, every mix, its CQL work
/// straight through the driver (see `raw.rs`).
async fn measure_raw(
    args: &Args,
    stack: &stack::Cql,
    bases: &[String],
    population: &Arc<Population>,
    processes: &cpu::Processes,
) -> anyhow::Result<Vec<PhaseResult>> {
    let raw = Arc::new(raw::Raw::connect(&stack.nodes, &stack.keyspace).await?);
    let client = reqwest::Client::new();
    let mut phases = Vec::new();
    for &connections in &args.connections {
        let variants: &[bool] = if args.raw_rewrites {
            &[false, true]
        } else {
            &[false]
        };
        let runs = args.ingest_share.iter().flat_map(|&share| {
            variants
                .iter()
                .filter(move |&&rewrites| !rewrites || share > 0.0)
                .map(move |&rewrites| (share, rewrites))
        });
        for (share, rewrites) in runs {
            raw.set_rewrites(rewrites);
            let quiet = quiet_start(args, &client, bases).await?;
            let stop = Arc::new(tokio::sync::Notify::new());
            let interval = Duration::from_millis(args.raw_flush_interval_ms.max(1));
            let flusher = tokio::spawn(raw.clone().flusher(interval, stop.clone()));
            let workload = Workload::Mix(share);
            let config = phase_config(
                args,
                bases,
                workload,
                connections,
                Some(raw.clone()),
                processes,
            );
            let result = drive::run_phase(config, population.clone()).await;
            stop.notify_one();
            flusher.await?;
            let mut result = result?;
            result.quiet_start = Some(quiet);
            result.raw_costs = Some(raw.take_costs());
            print_phase(&result);
            phases.push(result);
        }
    }
    Ok(phases)
}

/// Each errata mix's throughput against the raw phase of the same mix and
/// connections; the raw phases join the report.
fn compare(phases: &mut Vec<PhaseResult>, raw: Vec<PhaseResult>) {
    println!("errata against raw CQL (same mix, same connections):");
    println!(
        "  {:<24} {:>5} {:>10} {:>10} {:>8} {:>14} {:>14}",
        "workload", "conn", "errata/s", "raw/s", "ratio", "cass ms/req", "raw cass ms/req"
    );
    let cassandra = |p: &PhaseResult| {
        p.cpu
            .as_ref()
            .and_then(|c| c.cpu_ms_per_request.get("cassandra").copied())
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.3}"))
    };
    for phase in phases.iter_mut() {
        let twin = raw.iter().find(|r| {
            r.connections == phase.connections
                && r.workload.strip_prefix("raw ") == Some(phase.workload.as_str())
        });
        let Some(twin) = twin else { continue };
        phase.ratio_to_raw = (twin.rps > 0.0).then(|| phase.rps / twin.rps);
        println!(
            "  {:<24} {:>5} {:>10.0} {:>10.0} {:>8} {:>14} {:>14}",
            phase.workload,
            phase.connections,
            phase.rps,
            twin.rps,
            phase
                .ratio_to_raw
                .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
            cassandra(phase),
            cassandra(twin)
        );
    }
    phases.extend(raw);
}

/// For each connection count: the /healthz ceiling, then every mix (each
/// after a quiet start); the server's memory after each phase.
async fn measure(
    args: &Args,
    bases: &[String],
    population: &Arc<Population>,
    pids: &[u32],
    processes: &cpu::Processes,
) -> anyhow::Result<(Vec<PhaseResult>, Vec<Memory>)> {
    let mut phases = Vec::new();
    let mut memory = Vec::new();
    let mut note_memory = |after: String| {
        for (replica, pid) in pids.iter().enumerate() {
            if let Some(m) = server::memory_kib(*pid) {
                memory.push(Memory {
                    after: after.clone(),
                    replica,
                    vm_rss_kib: m.vm_rss,
                    vm_hwm_kib: m.vm_hwm,
                    rss_anon_kib: m.rss_anon,
                    rss_file_kib: m.rss_file,
                });
            }
        }
    };
    note_memory("setup".into());
    let client = reqwest::Client::new();
    for &connections in &args.connections {
        let mut workloads = vec![Workload::Healthz];
        workloads.extend(args.ingest_share.iter().map(|&s| Workload::Mix(s)));
        let mut ceiling = None;
        for workload in workloads {
            let quiet = match workload {
                Workload::Healthz => None,
                Workload::Mix(_) => Some(quiet_start(args, &client, bases).await?),
            };
            let config = phase_config(args, bases, workload, connections, None, processes);
            let before = metrics::scrape(&client, bases).await?;
            let mut result = drive::run_phase(config, population.clone()).await?;
            result.quiet_start = quiet;
            let after = metrics::scrape(&client, bases).await?;
            if workload == Workload::Healthz {
                ceiling = result.endpoints.first().map(|e| e.rps);
            } else {
                // Warm-up included on both sides: the server's own count.
                let delta = before.delta(&after);
                let requests = delta.sum("errata_http_requests_total");
                result.costs = Some(metrics::Costs::of(&delta, requests));
            }
            for e in &mut result.endpoints {
                e.ratio_to_healthz = ceiling.map(|c| e.rps / c);
            }
            print_phase(&result);
            note_memory(format!("{} at {connections} connections", result.workload));
            phases.push(result);
        }
    }
    Ok((phases, memory))
}

/// Runs a `--after-setup` / `--before-check` shell command, if given.
fn run_hook(when: &str, command: Option<&str>) -> anyhow::Result<()> {
    let Some(command) = command else {
        return Ok(());
    };
    let started = Instant::now();
    eprintln!("{when}: {command}");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    eprintln!("{when}: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Prints the check, the memory and the machine; writes the JSON and plot.
fn write_report(args: &Args, report: &Report) -> anyhow::Result<()> {
    if let Some(c) = &report.check {
        println!(
            "correctness: {} learners touched, {} error points acknowledged, {} counted, {} learners mismatched: {}",
            c.learners_touched,
            c.acknowledged_points,
            c.counted_points,
            c.mismatched_learners,
            if c.passed { "PASS" } else { "FAIL" }
        );
    }
    let last = report.server_memory.last().map(|m| m.after.clone());
    for m in report
        .server_memory
        .iter()
        .filter(|m| Some(&m.after) == last.as_ref())
    {
        println!(
            "server memory (replica {}): VmRSS {:.1} MiB (anon {:.1}, file {:.1}), VmHWM (peak) {:.1} MiB",
            m.replica,
            m.vm_rss_kib as f64 / 1024.0,
            m.rss_anon_kib as f64 / 1024.0,
            m.rss_file_kib as f64 / 1024.0,
            m.vm_hwm_kib as f64 / 1024.0
        );
    }
    println!(
        "machine: {} x {}, load average before {} after {}",
        report.machine.nproc,
        report.machine.cpu,
        report.machine.loadavg_before,
        report.machine.loadavg_after
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &report.phases)?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

fn print_phase(phase: &PhaseResult) {
    println!(
        "{} connections, {} ({:.0} s measured):",
        phase.connections, phase.workload, phase.seconds
    );
    println!(
        "  {:<28} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "p999 ms", "errors", "/healthz"
    );
    for e in &phase.endpoints {
        println!(
            "  {:<28} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>8}",
            e.endpoint,
            e.requests,
            e.rps,
            e.p50_ms,
            e.p99_ms,
            e.p999_ms,
            e.errors,
            e.ratio_to_healthz
                .map_or_else(|| "-".into(), |r| format!("{r:.2}"))
        );
    }
    if let Some(quiet) = &phase.quiet_start {
        quiet.print();
    }
    if let Some(costs) = &phase.costs {
        costs.print();
    }
    if let Some(costs) = &phase.raw_costs {
        costs.print();
    }
    if let Some(cpu) = &phase.cpu {
        cpu.print();
    }
    if phase.generate_redirected > 0 {
        println!(
            "  ({} practice requests became ingests: the learners drawn had no errors yet)",
            phase.generate_redirected
        );
    }
}

/// Every touched learner's frequencies, summed, against the acknowledged
/// error points.
async fn check(base: &str, population: &Arc<Population>) -> anyhow::Result<Check> {
    let touched: Vec<usize> = (0..population.learners.len())
        .filter(|&i| population.acked[i].load(Ordering::Relaxed) > 0)
        .collect();
    let touched = Arc::new(touched);
    let next = Arc::new(AtomicUsize::new(0));
    let counted = Arc::new(AtomicU64::new(0));
    let mismatched = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (touched, next, counted, mismatched, population, client, base) = (
            touched.clone(),
            next.clone(),
            counted.clone(),
            mismatched.clone(),
            population.clone(),
            client.clone(),
            base.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&index) = touched.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let user_id = population.learners[index].user_id;
                let body: Value = client
                    .get(format!("{base}/users/{user_id}/errors"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let sum: u64 = body["errors"]
                    .as_array()
                    .context("no errors array")?
                    .iter()
                    .filter_map(|e| e["errorFrequency"].as_u64())
                    .sum();
                counted.fetch_add(sum, Ordering::Relaxed);
                if sum != u64::from(population.acked[index].load(Ordering::Relaxed)) {
                    mismatched.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let acknowledged: u64 = touched
        .iter()
        .map(|&i| u64::from(population.acked[i].load(Ordering::Relaxed)))
        .sum();
    let counted = counted.load(Ordering::Relaxed);
    let mismatched = mismatched.load(Ordering::Relaxed);
    Ok(Check {
        learners_touched: touched.len(),
        acknowledged_points: acknowledged,
        counted_points: counted,
        mismatched_learners: mismatched,
        passed: acknowledged == counted && mismatched == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::port_of;

    #[test]
    fn ports_come_from_urls_and_contact_points() {
        assert_eq!(port_of("http://127.0.0.1:8000"), Some(8000));
        assert_eq!(port_of("redis://127.0.0.1:6390/0"), Some(6390));
        assert_eq!(port_of("127.0.0.2:19142"), Some(19142));
        assert_eq!(port_of("localhost"), None);
    }
}

//! errata-loadgen: drives a real errata server and reports what it sustains.
//!
//!   cargo run --release -p errata-loadgen -- --spawn target/release/errata \
//!       --learners 10000 --connections 32 --duration 20
//!
//! 1. Population: `--learners` learners, each with a conversation and an
//!    utterance, created through the API (or, with `--bulk-sqlite`, by the
//!    spawned binary's `errata seed` before it serves).
//! 2. For each connection count of `--connections`: the `/healthz` ceiling,
//!    then each `--ingest-share` mix of POST /simulate-and-generate and
//!    GET /generate-exercise, learners drawn from a Zipf distribution.
//! 3. Per endpoint: req/s, p50/p99/p999 from HDR histograms, errors and the
//!    ratio to the ceiling; the server's memory; then the correctness check:
//!    every touched learner's frequencies add up to the points acknowledged.

mod drive;
mod plot;
mod population;
mod server;

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
    /// Start this errata binary (embedded mode, fresh temporary data dir).
    #[arg(long, conflicts_with = "url")]
    spawn: Option<PathBuf>,
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
    /// data directory (`errata seed`) before it serves: fast setup for large
    /// populations (needs --spawn).
    #[arg(long, requires = "spawn")]
    bulk_sqlite: bool,
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
    let pid = setup.spawned.as_ref().map(|s| s.pid).or(args.server_pid);

    // Zipf rank -> learner: shuffled, so heavy learners are spread over the
    // id space rather than all created first.
    let mut learners = setup.learners;
    learners.shuffle(&mut rand::rng());
    let population = Arc::new(Population::new(learners));

    let (phases, memory) = measure(&args, &setup.base, &population, pid).await?;
    run_before_check(&args)?;
    let check = if args.no_check {
        None
    } else {
        Some(check(&setup.base, &population).await?)
    };
    let report = Report {
        machine: machine(loadavg_before),
        learners: args.learners,
        setup: setup.kind.into(),
        setup_seconds,
        zipf_exponent: args.zipf,
        phases,
        server_memory: memory,
        check,
    };
    write_report(&args, &report)?;
    if let Some(s) = setup.spawned {
        if args.keep_data {
            println!("data kept in {}", s.data_dir.display());
        }
        s.stop().await;
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
    Ok(())
}

/// The server under test and its learners.
struct Setup {
    spawned: Option<server::Spawned>,
    base: String,
    learners: Vec<population::Learner>,
    /// How the learners were made: "api" or "bulk".
    kind: &'static str,
}

async fn set_up(args: &Args) -> anyhow::Result<Setup> {
    match (&args.spawn, &args.url) {
        (Some(binary), _) => {
            let data_dir = server::temp_data_dir()?;
            let bulk = if args.bulk_sqlite {
                Some(population::bulk(
                    binary,
                    &data_dir,
                    args.learners,
                    args.utterances,
                )?)
            } else {
                None
            };
            let port = server::free_port()?;
            let spawned = server::Spawned::start(binary, data_dir, port, args.keep_data).await?;
            eprintln!(
                "  server: pid {} on 127.0.0.1:{port}, data in {}",
                spawned.pid,
                spawned.data_dir.display()
            );
            let base = format!("http://127.0.0.1:{port}");
            let (learners, kind) = match bulk {
                Some(learners) => (learners, "bulk"),
                None => (via_api(args, &base).await?, "api"),
            };
            Ok(Setup {
                spawned: Some(spawned),
                base,
                learners,
                kind,
            })
        }
        (None, Some(url)) => {
            let base = url.trim_end_matches('/').to_owned();
            let learners = via_api(args, &base).await?;
            Ok(Setup {
                spawned: None,
                base,
                learners,
                kind: "api",
            })
        }
        (None, None) => bail!("give --spawn PATH or --url URL"),
    }
}

async fn via_api(args: &Args, base: &str) -> anyhow::Result<Vec<population::Learner>> {
    population::via_api(base, args.learners, args.utterances, args.setup_concurrency).await
}

/// For each connection count: the /healthz ceiling, then every mix; the
/// server's memory after each phase.
async fn measure(
    args: &Args,
    base: &str,
    population: &Arc<Population>,
    pid: Option<u32>,
) -> anyhow::Result<(Vec<PhaseResult>, Vec<Memory>)> {
    let mut phases = Vec::new();
    let mut memory = Vec::new();
    let mut note_memory = |after: String| {
        if let Some(m) = pid.and_then(server::memory_kib) {
            memory.push(Memory {
                after,
                vm_rss_kib: m.vm_rss,
                vm_hwm_kib: m.vm_hwm,
                rss_anon_kib: m.rss_anon,
                rss_file_kib: m.rss_file,
            });
        }
    };
    note_memory("setup".into());
    for &connections in &args.connections {
        let mut workloads = vec![Workload::Healthz];
        workloads.extend(args.ingest_share.iter().map(|&s| Workload::Mix(s)));
        let mut ceiling = None;
        for workload in workloads {
            let duration = match workload {
                Workload::Healthz => args.healthz_duration,
                Workload::Mix(_) => args.duration,
            };
            let config = PhaseConfig {
                base: base.to_owned(),
                workload,
                connections,
                warmup: Duration::from_secs_f64(args.warmup),
                duration: Duration::from_secs_f64(duration),
                zipf_exponent: args.zipf,
                top_n: args.top_n,
                per_error: args.per_error,
            };
            let mut result = drive::run_phase(config, population.clone()).await?;
            if workload == Workload::Healthz {
                ceiling = result.endpoints.first().map(|e| e.rps);
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

fn run_before_check(args: &Args) -> anyhow::Result<()> {
    let Some(command) = &args.before_check else {
        return Ok(());
    };
    eprintln!("before the check: {command}");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
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
    if let Some(m) = report.server_memory.last() {
        println!(
            "server memory: VmRSS {:.1} MiB (anon {:.1}, file {:.1}), VmHWM (peak) {:.1} MiB",
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

//! Driving load: N workers, each with its own keep-alive connection, for a
//! fixed time, recording every latency in HDR histograms.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use serde_json::{json, Value};

use crate::population::Learner;
use crate::raw::Raw;

/// A realistic taxonomy: what a tutoring AI reports, with the weight of each
/// (common errors are reported more often), spelled as an AI might.
const TAXONOMY: &[(&str, &str, u32)] = &[
    ("Grammar", "Subject-Verb Agreement", 12),
    ("Grammar", "Verb Tense", 12),
    ("Grammar", "Articles", 10),
    ("Grammar", "Prepositions", 9),
    ("Grammar", "Plurals", 5),
    ("Grammar", "Word Order", 5),
    ("Grammar", "Pronouns", 4),
    ("Grammar", "Conditionals", 3),
    ("Grammar", "Modal Verbs", 3),
    ("Vocabulary", "Word Choice", 8),
    ("Vocabulary", "Collocations", 5),
    ("Vocabulary", "Phrasal Verbs", 4),
    ("Vocabulary", "False Friends", 2),
    ("Vocabulary", "Word Form", 3),
    ("Vocabulary", "Idioms", 1),
    ("Pronunciation", "Th Sounds", 4),
    ("Pronunciation", "Word Stress", 3),
    ("Pronunciation", "Vowel Length", 2),
    ("Pronunciation", "Final Consonants", 2),
    ("Pronunciation", "Intonation", 2),
    ("Fluency", "Filler Words", 4),
    ("Fluency", "Hesitation", 3),
    ("Fluency", "Repetition", 2),
    ("Fluency", "Self-Correction", 1),
    ("Fluency", "Incomplete Sentences", 1),
    ("grammar", " subject-verb  agreement ", 1),
    ("Discourse", "Register Mismatch", 1),
];

/// What the workers share: the learners (in Zipf rank order) and how many
/// error points the server acknowledged for each, across all phases.
pub struct Population {
    pub learners: Vec<Learner>,
    pub acked: Vec<AtomicU32>,
}

impl Population {
    pub fn new(learners: Vec<Learner>) -> Self {
        let acked = learners.iter().map(|_| AtomicU32::new(0)).collect();
        Self { learners, acked }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    Healthz,
    /// The share of requests that are ingests; the rest ask for practice.
    Mix(f64),
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointStats {
    pub endpoint: String,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Throughput as a share of the /healthz ceiling at the same connection
    /// count (filled in by the caller).
    pub ratio_to_healthz: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub workload: String,
    /// `errata` (through its HTTP API) or `raw` (its CQL work, straight
    /// through the driver; see `raw.rs`).
    pub via: &'static str,
    pub connections: usize,
    pub seconds: f64,
    /// Measured requests per second, every endpoint together.
    pub rps: f64,
    pub endpoints: Vec<EndpointStats>,
    /// How long the phase waited for a quiet start (filled in by the
    /// caller; none before /healthz).
    pub quiet_start: Option<crate::quiet::QuietStart>,
    /// The CPU the processes used in the measured window
    /// (`cpu_ms_per_request: {errata, redis, cassandra, loadgen}`, …, at the
    /// phase's top level).
    #[serde(flatten)]
    pub cpu: Option<crate::cpu::Usage>,
    /// errata's req/s over the raw phase's of the same mix and connections
    /// (filled in by the caller, errata's mix phases with --raw).
    pub ratio_to_raw: Option<f64>,
    /// What a raw phase sent per request (filled in by the caller once its
    /// flusher drained).
    pub raw_costs: Option<crate::raw::RawCosts>,
    /// Ingests done instead of a practice request because the learner drawn
    /// had no errors yet (even after redrawing).
    pub generate_redirected: u64,
    /// What the phase cost the server per request (from its metrics).
    pub costs: Option<crate::metrics::Costs>,
}

const INGEST: usize = 0;
const GENERATE: usize = 1;
const HEALTHZ: usize = 2;
const GENERATE_RECENT: usize = 3;
const PROGRESS: usize = 4;
/// How many kinds of request a phase sends.
const ENDPOINTS: usize = 5;
const NAMES: [&str; ENDPOINTS] = [
    "POST /simulate-and-generate",
    "GET /generate-exercise",
    "GET /healthz",
    "GET /generate-exercise?rank=recent",
    "GET /users/{id}/progress",
];
/// What a raw phase sends for each (see `raw.rs`).
const RAW_NAMES: [&str; ENDPOINTS] = [
    "raw: report batch",
    "raw: practice reads",
    "-",
    "raw: practice reads, recent",
    "raw: progress reads",
];
/// The reads of a mix, in equal shares: practice by frequency, practice by
/// recency, progress (so each is measured against the others in one run).
const READS: [usize; 3] = [GENERATE, GENERATE_RECENT, PROGRESS];

struct Recorder {
    histograms: [Histogram<u64>; ENDPOINTS],
    errors: [u64; ENDPOINTS],
    redirected: u64,
}

impl Recorder {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
        Self {
            histograms: std::array::from_fn(|_| h()),
            errors: [0; ENDPOINTS],
            redirected: 0,
        }
    }
}

/// Live counters the progress line reads.
pub struct Live {
    pub done: [AtomicU64; ENDPOINTS],
    pub errors: AtomicU64,
}

pub struct PhaseConfig {
    /// The replicas' base URLs; worker `w` talks to replica `w % len`.
    pub bases: Vec<String>,
    pub workload: Workload,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub zipf_exponent: f64,
    pub top_n: u32,
    pub per_error: u32,
    /// Issue the CQL work of each request straight through the driver
    /// instead of asking errata.
    pub raw: Option<Arc<Raw>>,
    /// Whose CPU to measure over the measured window.
    pub cpu: crate::cpu::Processes,
}

pub async fn run_phase(
    config: PhaseConfig,
    population: Arc<Population>,
) -> anyhow::Result<PhaseResult> {
    let live = Arc::new(Live {
        done: Default::default(),
        errors: AtomicU64::new(0),
    });
    let started = Instant::now();
    let window = Window {
        started,
        measure_from: started + config.warmup,
        until: started + config.warmup + config.duration,
    };
    let label = match config.workload {
        Workload::Healthz => "healthz".to_owned(),
        Workload::Mix(share) => format!("mix ingest={share}"),
    };
    let label = match &config.raw {
        Some(raw) if raw.rewrites() => format!("raw+rewrites {label}"),
        Some(_) => format!("raw {label}"),
        None => label,
    };
    let config = Arc::new(config);
    // The CPU used from the start of the measurement to its end.
    let cpu = {
        let processes = config.cpu.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(window.measure_from.into()).await;
            let start = processes.sample();
            tokio::time::sleep_until(window.until.into()).await;
            (start, processes.sample())
        })
    };
    let progress = spawn_progress(live.clone(), label.clone(), config.clone(), window);

    let zipf = Zipf::new(
        population.learners.len().max(1) as f64,
        config.zipf_exponent,
    )
    .map_err(|e| anyhow::anyhow!("zipf: {e}"))?;
    let mut workers = Vec::with_capacity(config.connections);
    for w in 0..config.connections {
        let (config, population, live) = (config.clone(), population.clone(), live.clone());
        workers.push(tokio::spawn(async move {
            worker(w as u64, config, population, live, zipf, window).await
        }));
    }
    let mut total = Recorder::new();
    // Each worker's connection stays open until the window's last sample,
    // so that its bytes are counted.
    let mut clients = Vec::with_capacity(workers.len());
    for worker in workers {
        let (r, client) = worker.await??;
        clients.push(client);
        for i in 0..ENDPOINTS {
            total.histograms[i].add(&r.histograms[i])?;
            total.errors[i] += r.errors[i];
        }
        total.redirected += r.redirected;
    }
    progress.abort();
    eprint!("\r{:100}\r", "");
    let seconds = config.duration.as_secs_f64();
    let names = if config.raw.is_some() {
        &RAW_NAMES
    } else {
        &NAMES
    };
    let endpoints = endpoint_stats(&total, seconds, names);
    let requests: u64 = endpoints.iter().map(|e| e.requests).sum();
    let (start, end) = cpu.await?;
    drop(clients);
    Ok(PhaseResult {
        workload: label,
        via: if config.raw.is_some() {
            "raw"
        } else {
            "errata"
        },
        connections: config.connections,
        seconds,
        rps: requests as f64 / seconds,
        endpoints,
        quiet_start: None,
        cpu: Some(start.usage(&end, seconds, requests)),
        ratio_to_raw: None,
        raw_costs: None,
        generate_redirected: total.redirected,
        costs: None,
    })
}

/// When a phase started, when its measurement starts and when it ends.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    measure_from: Instant,
    until: Instant,
}

/// Prints the phase's rates once a second, on one line, until aborted.
fn spawn_progress(
    live: Arc<Live>,
    label: String,
    config: Arc<PhaseConfig>,
    window: Window,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = [0u64; ENDPOINTS];
        let mut last_at = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = Instant::now();
            let dt = (now - last_at).as_secs_f64();
            let mut rates = [0.0; ENDPOINTS];
            for i in 0..ENDPOINTS {
                let d = live.done[i].load(Ordering::Relaxed);
                rates[i] = (d - last[i]) as f64 / dt;
                last[i] = d;
            }
            last_at = now;
            let phase = if now < window.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            let elapsed = now.saturating_duration_since(window.started).as_secs();
            let total = (window.until - window.started).as_secs();
            let line = match config.workload {
                Workload::Healthz => format!("healthz {:.0}/s", rates[HEALTHZ]),
                Workload::Mix(_) => format!(
                    "ingest {:.0}/s  generate {:.0}/s  recent {:.0}/s  progress {:.0}/s",
                    rates[INGEST], rates[GENERATE], rates[GENERATE_RECENT], rates[PROGRESS]
                ),
            };
            eprint!(
                "\r  [{label}, {} conn] {phase} {elapsed}/{total} s  {line}  errors {}      ",
                config.connections,
                live.errors.load(Ordering::Relaxed)
            );
        }
    })
}

/// Per endpoint that saw requests: rates and latency quantiles.
fn endpoint_stats(total: &Recorder, seconds: f64, names: &[&str; ENDPOINTS]) -> Vec<EndpointStats> {
    (0..ENDPOINTS)
        .filter(|&i| !total.histograms[i].is_empty() || total.errors[i] > 0)
        .map(|i| {
            let h = &total.histograms[i];
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            EndpointStats {
                endpoint: names[i].to_owned(),
                requests: h.len(),
                errors: total.errors[i],
                rps: h.len() as f64 / seconds,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
                max_ms: h.max() as f64 / 1000.0,
                ratio_to_healthz: None,
            }
        })
        .collect()
}

/// One error point of a report, as drawn.
#[derive(Debug, Clone, Copy)]
pub struct Picked {
    pub category: &'static str,
    pub subcategory: &'static str,
    pub correction: Option<&'static str>,
}

impl Picked {
    fn json(&self) -> Value {
        match self.correction {
            Some(correction) => json!({"errorCategory": self.category,
                "errorSubCategory": self.subcategory, "correction": correction}),
            None => json!({"errorCategory": self.category, "errorSubCategory": self.subcategory}),
        }
    }
}

fn pick_errors(rng: &mut SmallRng) -> Vec<Picked> {
    let total: u32 = TAXONOMY.iter().map(|t| t.2).sum();
    let n = rng.random_range(1..=3);
    (0..n)
        .map(|_| {
            let mut r = rng.random_range(0..total);
            let (category, subcategory, _) = TAXONOMY
                .iter()
                .find(|t| {
                    if r < t.2 {
                        true
                    } else {
                        r -= t.2;
                        false
                    }
                })
                .expect("weights add up");
            // Half the points carry the AI's correction, as a client that
            // sends them would.
            Picked {
                category,
                subcategory,
                correction: rng
                    .random_bool(0.5)
                    .then_some("She goes to work by bus every day."),
            }
        })
        .collect()
}

/// The URL of a read for the learner.
fn read_url(config: &PhaseConfig, base: &str, endpoint: usize, user_id: uuid::Uuid) -> String {
    let practice = format!(
        "{base}/generate-exercise?user_id={user_id}&top_n={}&per_error={}",
        config.top_n, config.per_error
    );
    match endpoint {
        GENERATE_RECENT => format!("{practice}&rank=recent&half_life_days=14"),
        PROGRESS => format!("{base}/users/{user_id}/progress?weeks=8"),
        _ => practice,
    }
}

async fn worker(
    seed: u64,
    config: Arc<PhaseConfig>,
    population: Arc<Population>,
    live: Arc<Live>,
    zipf: Zipf<f64>,
    window: Window,
) -> anyhow::Result<(Recorder, reqwest::Client)> {
    // One client per worker and one request at a time: one connection each.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rng = SmallRng::seed_from_u64(seed ^ rand::random::<u64>());
    let mut recorder = Recorder::new();
    let base = &config.bases[seed as usize % config.bases.len()];
    let healthz_url = format!("{base}/healthz");
    let ingest_url = format!("{base}/simulate-and-generate");
    loop {
        let now = Instant::now();
        if now >= window.until {
            return Ok((recorder, client));
        }
        let measured = now >= window.measure_from;
        let Workload::Mix(share) = config.workload else {
            let started = Instant::now();
            let ok = fetched(client.get(&healthz_url)).await;
            record(&mut recorder, &live, measured, HEALTHZ, started, ok);
            continue;
        };
        let (index, endpoint, redirected) = choose(&mut rng, &zipf, &population, share);
        if redirected && measured {
            recorder.redirected += 1;
        }
        let learner = &population.learners[index];
        let started = Instant::now();
        let ok = if let Some(raw) = &config.raw {
            if endpoint == INGEST {
                let errors = pick_errors(&mut rng);
                let said = learner.utterance_ids[rng.random_range(0..learner.utterance_ids.len())];
                let written = raw.ingest(learner, said, &errors).await;
                if written {
                    population.acked[index].fetch_add(errors.len() as u32, Ordering::Relaxed);
                }
                written
            } else {
                raw.read(
                    learner.user_id,
                    endpoint == GENERATE_RECENT,
                    endpoint == PROGRESS,
                )
                .await
            }
        } else if endpoint == INGEST {
            let errors: Vec<Value> = pick_errors(&mut rng).iter().map(Picked::json).collect();
            let points = errors.len() as u32;
            let said = learner.utterance_ids[rng.random_range(0..learner.utterance_ids.len())];
            let body = json!({
                "user_id": learner.user_id,
                "conversation_id": learner.conversation_id,
                "utterance_id": said,
                "errors": errors,
            });
            let request = client
                .post(&ingest_url)
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&body);
            let counted = acknowledged(request, points).await;
            if counted {
                population.acked[index].fetch_add(points, Ordering::Relaxed);
            }
            counted
        } else {
            fetched(client.get(read_url(&config, base, endpoint, learner.user_id))).await
        };
        record(&mut recorder, &live, measured, endpoint, started, ok);
    }
}

/// A learner drawn from the Zipf distribution and what to send for them:
/// (index, endpoint, whether a practice request became an ingest).
/// Practice is only for learners who have errors: it redraws a few times,
/// then records one for the learner instead.
fn choose(
    rng: &mut SmallRng,
    zipf: &Zipf<f64>,
    population: &Population,
    share: f64,
) -> (usize, usize, bool) {
    let draw = |rng: &mut SmallRng| zipf.sample(rng) as usize - 1;
    let mut index = draw(rng);
    if rng.random_bool(share.clamp(0.0, 1.0)) {
        return (index, INGEST, false);
    }
    let has_errors = |i: usize| population.acked[i].load(Ordering::Relaxed) > 0;
    let mut tries = 0;
    while !has_errors(index) && tries < 16 {
        index = draw(rng);
        tries += 1;
    }
    if has_errors(index) {
        (index, READS[rng.random_range(0..READS.len())], false)
    } else {
        (index, INGEST, true)
    }
}

/// The request succeeded and its whole answer arrived.
async fn fetched(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// The report was acknowledged as counting all its `points`.
async fn acknowledged(request: reqwest::RequestBuilder, points: u32) -> bool {
    match request.send().await {
        Ok(r) if r.status().is_success() => matches!(
            r.json::<Value>().await,
            Ok(v) if v["recorded"] == points && v["duplicate"] == false
        ),
        _ => false,
    }
}

fn record(
    recorder: &mut Recorder,
    live: &Live,
    measured: bool,
    endpoint: usize,
    started: Instant,
    ok: bool,
) {
    let micros = started.elapsed().as_micros() as u64;
    if ok {
        live.done[endpoint].fetch_add(1, Ordering::Relaxed);
    } else {
        live.errors.fetch_add(1, Ordering::Relaxed);
    }
    if !measured {
        return;
    }
    if ok {
        recorder.histograms[endpoint].saturating_record(micros.max(1));
    } else {
        recorder.errors[endpoint] += 1;
    }
}

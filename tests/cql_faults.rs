//! Randomised faults under load, as an operator would meet them: three
//! `errata serve` replicas, Redis as deployed (append-only file, fsynced
//! before each answer), each replica reaching CQL through a fault proxy of
//! its own, and clients that retry every request (with its `Idempotency-Key`, or the
//! same sign-up) until it is acknowledged. Meanwhile three fault loops run:
//! - processes: a replica SIGKILLed or SIGTERMed (and started again), Redis
//!   SIGKILLed (and restarted from its append-only file), or a replica
//!   **stalled**: SIGSTOPped for longer than the flush lock, with
//!   `errata repair` running meanwhile, then SIGCONTed (what it was doing
//!   goes on, late, and the answers its clients gave up on arrive late);
//! - the network: a replica's CQL connections cut, black-holed, black-holed
//!   then cut, or held past the driver's request timeout and then
//!   **delivered late** (6–12 s: a counter batch its sender gave up on
//!   still applies);
//! - **erasure**: a learner erased mid-load (a new one signs up in its
//!   place); requests for them may then be answered 404.
//!
//! Each fault is injected at least once per run: each loop first deals its
//! kinds in a seeded order, then draws at random; the load lasts until every
//! kind has happened.
//!
//! Afterwards, with every fault lifted:
//! - after `errata flush` no count is below what was acknowledged;
//! - `error_events` holds exactly the acknowledged points;
//! - after `errata repair` and a flush every count equals what was
//!   acknowledged (or, in the second test, where repair runs all through
//!   the load, after the final flush alone);
//! - every erased learner is 404 on every read, has no row in any table
//!   (read in CQL) and no Redis key but its erasure marker (and, for at
//!   most a lock period, the flush lock its erasure let expire).
//!
//! Seeded: the seed is printed first. Each test runs a fixed seed of its
//! own (so CI repeats the same fault and request sequences);
//! `ERRATA_TEST_SEED=N` runs seed N and `ERRATA_TEST_SEED=random` one from
//! the clock (the timing between events is the machine's).
//! `ERRATA_TEST_SOAK_SECS=N` runs the load for N seconds instead of the
//! CI-sized default.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use errata::config::Config;
use errata::store::cql::buffer::{erased_key, learner_of, lock_key};
use errata::store::policy::{CQL_REQUEST_TIMEOUT, FLUSH_LOCK};
use errata_testkit as support;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{
    case_folded, counts_in, cql_config, cql_node, cql_session, durable_counts, event_counts,
    learner_keys, learner_rows, seed_or, Api, Counts, Errata, FaultProxy, KeyspaceSlot, Learner,
    RedisServer, Rng, ServeProcess,
};
use uuid::Uuid;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

const REPLICAS: usize = 3;
const CLIENTS: usize = 6;
/// Learners made before the load; each client signs up more during it.
const LEARNERS: usize = 6;
const SIGN_UPS_PER_CLIENT: usize = 2;
const TAXONOMY: [(&str, &str); 4] = [
    ("Grammar", "Articles"),
    ("Vocabulary", "Word Choice"),
    ("Fluency", "Filler Words"),
    ("Odd: {Names}", "a}b{c:d"),
];
/// Load of each test unless `ERRATA_TEST_SOAK_SECS` says otherwise.
const DEFAULT_LOAD: Duration = Duration::from_secs(30);
/// No request may stay unacknowledged longer than this, faults or not.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// How much longer than asked the load may last for every fault to happen.
const COVERAGE_DEADLINE: Duration = Duration::from_secs(240);
/// The fixed seeds of the two tests (see the module's documentation).
const SEED_REPAIR_AFTER: u64 = 20_261_207;
const SEED_REPAIR_DURING: u64 = 20_261_208;

/// The process faults, dealt once in a seeded order before random draws.
#[derive(Clone, Copy, Debug)]
enum ProcessFault {
    ReplicaKill,
    ReplicaTerm,
    RedisKill,
    Stall,
}

/// The network faults, dealt the same way.
#[derive(Clone, Copy, Debug)]
enum NetworkFault {
    Cut,
    Hold,
    LateDelivery,
    HoldThenCut,
}

/// Sends `signal` to a replica's process.
fn signal(replica: &ServeProcess, signal: libc::c_int) {
    let pid = replica.child.id() as libc::pid_t;
    // SAFETY: a plain kill(2) of our own child, which has not been reaped.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "signal {signal} to replica {pid}");
}

/// A seeded shuffle (Fisher–Yates).
fn deal<T: Copy>(rng: &mut Rng, kinds: &[T]) -> Vec<T> {
    let mut deck = kinds.to_vec();
    for i in (1..deck.len()).rev() {
        deck.swap(i, rng.below(i + 1));
    }
    deck
}

fn load_duration() -> Duration {
    match std::env::var("ERRATA_TEST_SOAK_SECS") {
        Ok(secs) => Duration::from_secs(secs.trim().parse().expect("ERRATA_TEST_SOAK_SECS")),
        Err(_) => DEFAULT_LOAD,
    }
}

/// How often each thing happened.
#[derive(Default)]
struct Tally {
    replica_kills: AtomicU64,
    replica_terms: AtomicU64,
    redis_kills: AtomicU64,
    cql_cuts: AtomicU64,
    cql_holds: AtomicU64,
    cql_long_holds: AtomicU64,
    cql_hold_then_cut: AtomicU64,
    stalls: AtomicU64,
    stall_repairs: AtomicU64,
    erasures: AtomicU64,
    erasure_attempts: AtomicU64,
    refused_for_erased: AtomicU64,
    failed_starts: AtomicU64,
    requests: AtomicU64,
    points: AtomicU64,
    failed_attempts: AtomicU64,
    duplicates: AtomicU64,
    sign_ups: AtomicU64,
    reads: AtomicU64,
    repairs: AtomicU64,
    failed_repairs: AtomicU64,
}

fn n(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

/// The system under test and what the clients were told.
struct Cluster {
    seed: u64,
    /// Straight to CQL and Redis: for `errata flush` / `repair` and checks.
    config: Config,
    slot: KeyspaceSlot,
    redis: Mutex<RedisServer>,
    proxies: Vec<FaultProxy>,
    replicas: Vec<Mutex<Option<ServeProcess>>>,
    /// The replicas' addresses; `None` while one is down.
    bases: RwLock<Vec<Option<String>>>,
    client: reqwest::Client,
    /// The learners clients pick from: those not being erased.
    learners: RwLock<Vec<Learner>>,
    /// Learners whose erasure was sent (and then answered 204).
    erasing: RwLock<HashSet<Uuid>>,
    erased: Mutex<Vec<Uuid>>,
    /// Every sign-up's e-mail and the account it was answered with.
    accounts: Mutex<Vec<(String, Uuid)>>,
    /// Acknowledged points: learner → (category_key, subcategory_key) → n.
    acked: Mutex<HashMap<Uuid, Counts>>,
    tally: Tally,
    faults_on: AtomicBool,
    load_on: AtomicBool,
}

impl Cluster {
    async fn start(seed: u64) -> Arc<Self> {
        let redis = RedisServer::start_as_deployed();
        let (mut config, slot) = cql_config(&redis.url()).await;
        config.flush_interval_ms = 250;
        let mut proxies = Vec::new();
        for _ in 0..REPLICAS {
            proxies.push(FaultProxy::start(cql_node()).await);
        }
        let cluster = Arc::new(Self {
            seed,
            config,
            slot,
            redis: Mutex::new(redis),
            proxies,
            replicas: (0..REPLICAS).map(|_| Mutex::new(None)).collect(),
            bases: RwLock::new(vec![None; REPLICAS]),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("a client"),
            learners: RwLock::new(Vec::new()),
            erasing: RwLock::new(HashSet::new()),
            erased: Mutex::new(Vec::new()),
            accounts: Mutex::new(Vec::new()),
            acked: Mutex::new(HashMap::new()),
            tally: Tally::default(),
            faults_on: AtomicBool::new(true),
            load_on: AtomicBool::new(true),
        });
        for r in 0..REPLICAS {
            cluster.start_replica(r).await;
        }
        cluster
    }

    /// Replica `r`'s configuration: CQL through its own proxy.
    fn replica_config(&self, r: usize) -> Config {
        let mut config = self.config.clone();
        config.cql_nodes = vec![self.proxies[r].address.to_string()];
        config
    }

    /// Starts replica `r`, again and again if it cannot start (its CQL
    /// cut, Redis down), until it listens.
    async fn start_replica(self: &Arc<Self>, r: usize) {
        let started = Instant::now();
        loop {
            let config = self.replica_config(r);
            let attempt = tokio::task::spawn_blocking(move || ERRATA.try_serve(&config))
                .await
                .expect("starting a replica");
            match attempt {
                Ok(replica) => {
                    let base = replica.url("");
                    *self.replicas[r].lock().expect("replicas") = Some(replica);
                    self.bases.write().expect("bases")[r] = Some(base);
                    return;
                }
                Err(e) => {
                    self.tally.failed_starts.fetch_add(1, Ordering::SeqCst);
                    assert!(
                        started.elapsed() < Duration::from_secs(90),
                        "seed {}: replica {r} would not start: {e}",
                        self.seed
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }

    /// Takes replica `r` out of the clients' list and hands it over.
    fn take_replica(&self, r: usize) -> Option<ServeProcess> {
        self.bases.write().expect("bases")[r] = None;
        self.replicas[r].lock().expect("replicas").take()
    }

    fn any_base(&self, rng: &mut Rng) -> Option<String> {
        let bases: Vec<String> = self
            .bases
            .read()
            .expect("bases")
            .iter()
            .flatten()
            .cloned()
            .collect();
        (!bases.is_empty()).then(|| bases[rng.below(bases.len())].clone())
    }

    fn learner_ids(&self) -> Vec<Uuid> {
        self.learners
            .read()
            .expect("learners")
            .iter()
            .map(|l| l.user_id)
            .collect()
    }

    /// Sends the request `request` builds for a replica's base until a
    /// replica answers `want` with a complete JSON body (a 503, a broken
    /// connection or a cut-off answer is retried, the same request again);
    /// returns that body. A 404 while `learner` is being erased ends it
    /// with `None` (the request was refused, not acknowledged). Any other
    /// answer fails the test.
    async fn until_answered(
        &self,
        rng: &mut Rng,
        what: &str,
        want: StatusCode,
        learner: Option<Uuid>,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Option<Value> {
        let started = Instant::now();
        loop {
            if let Some(base) = self.any_base(rng) {
                if let Ok(response) = request(&base).send().await {
                    let status = response.status();
                    if status == StatusCode::NOT_FOUND
                        && learner.is_some_and(|l| self.is_erasing(l))
                    {
                        self.tally.refused_for_erased.fetch_add(1, Ordering::SeqCst);
                        return None;
                    }
                    // Only a complete answer is an acknowledgement.
                    match response.json::<Value>().await {
                        Ok(answer) if status == want => return Some(answer),
                        Ok(answer) if status != StatusCode::SERVICE_UNAVAILABLE => {
                            panic!("seed {}: {what} answered {status} {answer}", self.seed)
                        }
                        _ => {}
                    }
                }
            }
            self.tally.failed_attempts.fetch_add(1, Ordering::SeqCst);
            assert!(
                started.elapsed() < REQUEST_DEADLINE,
                "seed {}: {what} was never answered {want}",
                self.seed
            );
            tokio::time::sleep(rng.millis(20, 200)).await;
        }
    }

    fn is_erasing(&self, user: Uuid) -> bool {
        self.erasing.read().expect("erasing").contains(&user)
    }

    /// Posts `body` to `path` until a replica answers 201 (the same body
    /// each time); returns the id `field` of the answer.
    async fn create(&self, rng: &mut Rng, path: &str, body: &Value, field: &str) -> Uuid {
        let what = format!("POST {path} {body}");
        let answer = self
            .until_answered(rng, &what, StatusCode::CREATED, None, |base| {
                self.client.post(format!("{base}{path}")).json(body)
            })
            .await
            .expect("no erasure of a learner being signed up");
        support::id(&answer, field)
    }

    /// A new learner, its conversation and an utterance, each retried
    /// until created (a retried sign-up must get one account).
    async fn sign_up(&self, rng: &mut Rng) -> Learner {
        let email = format!("Learner.{}@Example.com", rng.uuid());
        let user = self
            .create(
                rng,
                "/users/",
                &json!({"username": "learner", "email": email}),
                "user_id",
            )
            .await;
        self.accounts.lock().expect("accounts").push((email, user));
        let conversation = self
            .create(
                rng,
                "/conversations/",
                &json!({"user_id": user}),
                "conversation_id",
            )
            .await;
        let utterance = self
            .create(
                rng,
                "/utterances/",
                &json!({"user_id": user, "conversation_id": conversation, "content": "He go to school."}),
                "utterance_id",
            )
            .await;
        self.tally.sign_ups.fetch_add(1, Ordering::SeqCst);
        Learner {
            user_id: user,
            conversation_id: conversation,
            utterance_id: utterance,
        }
    }

    /// Records one report, retried with its key until acknowledged (or
    /// refused because its learner is being erased).
    async fn record(&self, rng: &mut Rng, learner: Learner, errors: &[(&str, &str)]) {
        let key = rng.uuid().to_string();
        let body = support::report(&learner, errors);
        let Some(answer) = self
            .until_answered(
                rng,
                "a report",
                StatusCode::OK,
                Some(learner.user_id),
                |base| {
                    self.client
                        .post(format!("{base}/simulate-and-generate"))
                        .header("Idempotency-Key", &key)
                        .json(&body)
                },
            )
            .await
        else {
            return;
        };
        if answer["duplicate"] == true {
            self.tally.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        let mut acked = self.acked.lock().expect("acked");
        let counts = acked.entry(learner.user_id).or_default();
        for (c, s) in errors {
            *counts
                .entry((c.to_lowercase(), s.to_lowercase()))
                .or_insert(0) += 1;
        }
        self.tally.requests.fetch_add(1, Ordering::SeqCst);
        self.tally
            .points
            .fetch_add(errors.len() as u64, Ordering::SeqCst);
    }

    /// Reads a learner's frequencies: never below what was acknowledged
    /// before the read was sent (a 503 is fine).
    async fn read(&self, rng: &mut Rng, learner: Learner) {
        let before = self
            .acked
            .lock()
            .expect("acked")
            .get(&learner.user_id)
            .cloned()
            .unwrap_or_default();
        let Some(base) = self.any_base(rng) else {
            return;
        };
        let Ok(response) = self
            .client
            .get(format!("{base}/users/{}/errors", learner.user_id))
            .send()
            .await
        else {
            return;
        };
        let status = response.status();
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => return,
            StatusCode::NOT_FOUND if self.is_erasing(learner.user_id) => return,
            _ => panic!(
                "seed {}: learner {}'s frequencies answered {status}",
                self.seed, learner.user_id
            ),
        }
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        let seen = case_folded(&counts_in(&body));
        for (key, n) in &before {
            let shown = seen.get(key).copied().unwrap_or(0);
            assert!(
                shown >= *n,
                "seed {}: learner {} read {shown} of {key:?}, {n} acknowledged before",
                self.seed,
                learner.user_id
            );
        }
        self.tally.reads.fetch_add(1, Ordering::SeqCst);
    }

    /// One client: reports (and now and then a read or a sign-up) until the
    /// load ends; the request in hand when it ends is still seen through.
    async fn client(self: Arc<Self>, mut rng: Rng) {
        let mut signed_up = 0;
        while self.load_on.load(Ordering::SeqCst) {
            let dice = rng.below(100);
            if dice < 2 && signed_up < SIGN_UPS_PER_CLIENT {
                signed_up += 1;
                let learner = self.sign_up(&mut rng).await;
                self.learners.write().expect("learners").push(learner);
                continue;
            }
            let learner = {
                let learners = self.learners.read().expect("learners");
                learners[rng.below(learners.len())]
            };
            if dice < 10 {
                self.read(&mut rng, learner).await;
                continue;
            }
            let errors: Vec<(&str, &str)> = (0..1 + rng.below(4))
                .map(|_| TAXONOMY[rng.below(TAXONOMY.len())])
                .collect();
            self.record(&mut rng, learner, &errors).await;
        }
    }

    /// Kills, stops and stalls replicas and kills Redis, one fault at a
    /// time, each repaired before the next; everything is up when it
    /// returns.
    async fn process_faults(self: Arc<Self>, mut rng: Rng) {
        use ProcessFault::*;
        let mut deck = deal(&mut rng, &[ReplicaKill, ReplicaTerm, RedisKill, Stall]);
        while self.faults_on.load(Ordering::SeqCst) {
            tokio::time::sleep(rng.millis(1_000, 3_000)).await;
            if !self.faults_on.load(Ordering::SeqCst) {
                break;
            }
            let fault = deck.pop().unwrap_or_else(|| match rng.below(100) {
                0..35 => ReplicaKill,
                35..60 => ReplicaTerm,
                60..85 => RedisKill,
                _ => Stall,
            });
            let r = rng.below(REPLICAS);
            match fault {
                ReplicaKill => {
                    // SIGKILL: whatever it was doing is cut off.
                    drop(self.take_replica(r));
                    self.tally.replica_kills.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(rng.millis(200, 1_500)).await;
                    self.start_replica(r).await;
                }
                ReplicaTerm => {
                    // SIGTERM: stops taking requests, drains the buffer.
                    if let Some(replica) = self.take_replica(r) {
                        self.tally.replica_terms.fetch_add(1, Ordering::SeqCst);
                        self.stop_gracefully(replica).await;
                    }
                    self.start_replica(r).await;
                }
                RedisKill => {
                    // Redis SIGKILLed, restarted from its append-only file.
                    let cluster = self.clone();
                    tokio::task::spawn_blocking(move || {
                        cluster.redis.lock().expect("redis").kill()
                    })
                    .await
                    .expect("killing Redis");
                    self.tally.redis_kills.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(rng.millis(300, 2_000)).await;
                    let cluster = self.clone();
                    tokio::task::spawn_blocking(move || {
                        cluster.redis.lock().expect("redis").restart()
                    })
                    .await
                    .expect("restarting Redis");
                }
                Stall => self.stall(&mut rng, r).await,
            }
        }
    }

    /// SIGTERM, then waits for the replica to drain and exit.
    async fn stop_gracefully(&self, mut replica: ServeProcess) {
        let seed = self.seed;
        tokio::task::spawn_blocking(move || {
            signal(&replica, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(90);
            while replica.child.try_wait().expect("waiting").is_none() {
                assert!(
                    Instant::now() < deadline,
                    "seed {seed}: a replica did not stop after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .expect("stopping a replica");
    }

    /// Replica `r` frozen (SIGSTOP) for longer than the flush lock, as a
    /// long pause would: its flushes, requests and leases stop where they
    /// are, their locks lapse, and `errata repair` (run again and again
    /// meanwhile) takes its learners over. Then it goes on (SIGCONT) from
    /// where it stopped, late; its clients gave up on it long before.
    async fn stall(self: &Arc<Self>, rng: &mut Rng, r: usize) {
        let base = self.bases.write().expect("bases")[r].take();
        let stopped = {
            let replica = self.replicas[r].lock().expect("replicas");
            replica
                .as_ref()
                .map(|replica| signal(replica, libc::SIGSTOP))
        };
        if stopped.is_none() {
            return;
        }
        self.tally.stalls.fetch_add(1, Ordering::SeqCst);
        let until = Instant::now() + FLUSH_LOCK + rng.millis(1_000, 6_000);
        let repairs = {
            let cluster = self.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    if cluster.repair().await.is_ok() {
                        cluster.tally.stall_repairs.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        tokio::time::sleep_until(until.into()).await;
        if let Some(replica) = self.replicas[r].lock().expect("replicas").as_ref() {
            signal(replica, libc::SIGCONT);
        }
        repairs.await.expect("the repairs during a stall");
        self.bases.write().expect("bases")[r] = base;
    }

    /// Cuts, black-holes and delays the replicas' CQL connections, one at a
    /// time; every proxy forwards when it returns.
    async fn network_faults(self: Arc<Self>, mut rng: Rng) {
        use NetworkFault::*;
        let mut deck = deal(&mut rng, &[Cut, Hold, LateDelivery, HoldThenCut]);
        while self.faults_on.load(Ordering::SeqCst) {
            tokio::time::sleep(rng.millis(500, 2_500)).await;
            if !self.faults_on.load(Ordering::SeqCst) {
                break;
            }
            let proxy = &self.proxies[rng.below(REPLICAS)];
            let fault = deck.pop().unwrap_or_else(|| match rng.below(100) {
                0..35 => Cut,
                35..60 => Hold,
                60..85 => LateDelivery,
                _ => HoldThenCut,
            });
            match fault {
                Cut => {
                    proxy.cut();
                    self.tally.cql_cuts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(rng.millis(300, 2_000)).await;
                }
                Hold => {
                    proxy.hold();
                    self.tally.cql_holds.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(rng.millis(300, 2_500)).await;
                }
                LateDelivery => {
                    // Longer than a CQL request may take: what was sent
                    // meanwhile failed for its sender and is applied all the
                    // same when the path comes back (a counter batch, too).
                    proxy.hold();
                    self.tally.cql_long_holds.fetch_add(1, Ordering::SeqCst);
                    let late = (CQL_REQUEST_TIMEOUT + Duration::from_secs(1)).as_millis() as u64;
                    tokio::time::sleep(rng.millis(late, 12_000)).await;
                }
                HoldThenCut => {
                    proxy.hold();
                    self.tally.cql_hold_then_cut.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(rng.millis(300, 2_000)).await;
                    proxy.cut();
                }
            }
            proxy.restore().await;
        }
    }

    /// Erases learners under the load, one at a time, each replaced by a
    /// new sign-up first (so the clients always have learners).
    async fn erasures(self: Arc<Self>, mut rng: Rng) {
        while self.faults_on.load(Ordering::SeqCst) {
            tokio::time::sleep(rng.millis(2_000, 6_000)).await;
            if !self.faults_on.load(Ordering::SeqCst) {
                break;
            }
            let newcomer = self.sign_up(&mut rng).await;
            let learner = {
                let mut learners = self.learners.write().expect("learners");
                let at = rng.below(learners.len());
                let learner = learners.remove(at);
                learners.push(newcomer);
                learner
            };
            self.erase(&mut rng, learner.user_id).await;
        }
    }

    /// `DELETE /users/{id}` until answered 204 (or 404 once an attempt that
    /// was not answered, or answered 503, may have erased them meanwhile).
    async fn erase(&self, rng: &mut Rng, user: Uuid) {
        self.erasing.write().expect("erasing").insert(user);
        let started = Instant::now();
        let mut tried = false;
        loop {
            if let Some(base) = self.any_base(rng) {
                self.tally.erasure_attempts.fetch_add(1, Ordering::SeqCst);
                match self
                    .client
                    .delete(format!("{base}/users/{user}"))
                    .send()
                    .await
                    .map(|r| r.status())
                {
                    Ok(StatusCode::NO_CONTENT) => break,
                    Ok(StatusCode::NOT_FOUND) if tried => break,
                    Ok(StatusCode::SERVICE_UNAVAILABLE) | Err(_) => tried = true,
                    Ok(status) => panic!(
                        "seed {}: erasing learner {user} answered {status}",
                        self.seed
                    ),
                }
            }
            assert!(
                started.elapsed() < REQUEST_DEADLINE,
                "seed {}: learner {user}'s erasure was never answered 204",
                self.seed
            );
            tokio::time::sleep(rng.millis(100, 500)).await;
        }
        self.erased.lock().expect("erased").push(user);
        self.tally.erasures.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every kind of fault has happened at least once.
    fn every_fault_injected(&self) -> bool {
        let t = &self.tally;
        [
            &t.replica_kills,
            &t.replica_terms,
            &t.redis_kills,
            &t.stalls,
            &t.cql_cuts,
            &t.cql_holds,
            &t.cql_long_holds,
            &t.cql_hold_then_cut,
            &t.erasures,
        ]
        .iter()
        .all(|count| n(count) > 0)
    }

    /// Stops the fault loops; each leaves everything up when it returns.
    async fn lift_faults(&self, faults: [JoinHandle<()>; 3]) {
        self.faults_on.store(false, Ordering::SeqCst);
        for fault in faults {
            fault.await.expect("the fault loop");
        }
    }

    /// Stops the clients, each once its request in hand is acknowledged.
    async fn end_load(&self, clients: Vec<JoinHandle<()>>) {
        self.load_on.store(false, Ordering::SeqCst);
        for client in clients {
            client.await.expect("a client");
        }
    }

    /// `errata repair` of every learner of this test, erased ones included
    /// (the keyspace holds other tests' learners too), once.
    async fn repair(&self) -> Result<String, String> {
        let mut args = vec!["repair".to_owned()];
        let erasing: Vec<Uuid> = self
            .erasing
            .read()
            .expect("erasing")
            .iter()
            .copied()
            .collect();
        for user in self.learner_ids().into_iter().chain(erasing) {
            args.extend(["--user".to_owned(), user.to_string()]);
        }
        let config = self.config.clone();
        let out = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ERRATA.try_run(&config, &args)
        })
        .await
        .expect("running repair");
        match &out {
            Ok(_) => self.tally.repairs.fetch_add(1, Ordering::SeqCst),
            Err(_) => self.tally.failed_repairs.fetch_add(1, Ordering::SeqCst),
        };
        out
    }

    async fn flush(&self) {
        let config = self.config.clone();
        let out = tokio::task::spawn_blocking(move || ERRATA.try_run(&config, &["flush"]))
            .await
            .expect("running flush");
        if let Err(e) = out {
            panic!(
                "seed {}: errata flush failed with every fault lifted: {e}",
                self.seed
            );
        }
    }

    /// Waits until no flusher that died or was cut off left deltas in
    /// flight: every in-flight hash belongs to a flusher that took its
    /// learner just now (after a crash, the lock runs out and the next
    /// flusher replays them).
    async fn no_interrupted_flush(&self) {
        let started = Instant::now();
        let fresh = FLUSH_LOCK.as_millis() as i64 - 3_000;
        let mut quiet_checks = 0;
        while quiet_checks < 2 {
            let port = self.redis.lock().expect("redis").port;
            let mut conn = support::redis_server::client(port).await;
            let keys: Vec<String> = conn.keys("errata:*:inflight").await.expect("KEYS");
            let mut stale = 0;
            for key in &keys {
                let user = learner_of(key).expect("a learner key");
                let ttl: i64 = conn.pttl(lock_key(user)).await.expect("PTTL");
                if ttl < fresh {
                    stale += 1;
                }
            }
            quiet_checks = if stale == 0 { quiet_checks + 1 } else { 0 };
            assert!(
                started.elapsed() < FLUSH_LOCK + Duration::from_secs(20),
                "seed {}: {stale} interrupted flushes were never taken over",
                self.seed
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn acked(&self) -> HashMap<Uuid, Counts> {
        self.acked.lock().expect("acked").clone()
    }

    /// Every learner's durable counters and events, against what was
    /// acknowledged. Returns how many counts were above (none below: that
    /// fails the test), and checks the log is exact.
    async fn check_after_flush(&self, moment: &str) -> usize {
        let acked = self.acked();
        let ks = &self.slot.keyspace;
        let mut above = 0;
        for user in self.learner_ids() {
            let want = acked.get(&user).cloned().unwrap_or_default();
            let durable = durable_counts(ks, user).await;
            for (key, n) in &want {
                let got = durable.get(key).copied().unwrap_or(0);
                assert!(
                    got >= *n,
                    "seed {}: {moment}: learner {user} has {got} of {key:?}, {n} acknowledged",
                    self.seed
                );
                if got > *n {
                    above += 1;
                }
            }
            for key in durable.keys() {
                assert!(
                    want.contains_key(key) || durable[key] == 0,
                    "seed {}: {moment}: learner {user} counts {key:?}, never acknowledged",
                    self.seed
                );
            }
            assert_eq!(
                event_counts(ks, user).await,
                want,
                "seed {}: {moment}: learner {user}'s error_events is not what was acknowledged",
                self.seed
            );
        }
        above
    }

    /// Every count equals what was acknowledged, durable and over HTTP.
    async fn check_exact(&self, moment: &str) {
        let acked = self.acked();
        let ks = &self.slot.keyspace;
        let base = self.bases.read().expect("bases")[0]
            .clone()
            .expect("replica 0 is up");
        let api = Api::with_client(self.client.clone(), base);
        for user in self.learner_ids() {
            let want = acked.get(&user).cloned().unwrap_or_default();
            let durable: Counts = durable_counts(ks, user)
                .await
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .collect();
            assert_eq!(
                durable, want,
                "seed {}: {moment}: learner {user}'s counters",
                self.seed
            );
            let shown = case_folded(&api.frequency_counts(user).await);
            assert_eq!(
                shown, want,
                "seed {}: {moment}: learner {user}'s frequencies over HTTP",
                self.seed
            );
        }
        // Every sign-up's answer owns its e-mail.
        let session = cql_session().await;
        let accounts = self.accounts.lock().expect("accounts").clone();
        for (email, user) in accounts {
            if self.is_erasing(user) {
                continue;
            }
            let rows = session
                .query_unpaged(
                    format!("SELECT user_id FROM {ks}.users_by_email WHERE email_key = ?"),
                    (email.to_lowercase(),),
                )
                .await
                .expect("reading a claim")
                .into_rows_result()
                .expect("rows");
            let (owner,): (Uuid,) = rows.single_row().expect("one claim");
            assert_eq!(
                owner, user,
                "seed {}: {email} is another account's",
                self.seed
            );
        }
    }

    /// Every erased learner is gone: 404 on every read, no row in any
    /// table, no Redis key but the erasure marker (until it expires) and
    /// the flush lock the erasure took (expiring within a lock period), in
    /// no dirty set. Returns how many learners were checked.
    async fn check_erased(&self, moment: &str) -> usize {
        let erased = self.erased.lock().expect("erased").clone();
        let base = self.bases.read().expect("bases")[0]
            .clone()
            .expect("replica 0 is up");
        let session = cql_session().await;
        let port = self.redis.lock().expect("redis").port;
        let mut conn = support::redis_server::client(port).await;
        let emails: HashMap<Uuid, String> = self
            .accounts
            .lock()
            .expect("accounts")
            .iter()
            .map(|(email, user)| (*user, email.to_lowercase()))
            .collect();
        for &user in &erased {
            for path in [
                format!("/users/{user}"),
                format!("/users/{user}/errors"),
                format!("/users/{user}/errors/recent"),
                format!("/users/{user}/progress"),
                format!("/users/{user}/schedule"),
                format!("/users/{user}/answers"),
                format!("/users/{user}/export"),
                format!("/generate-exercise?user_id={user}"),
            ] {
                let status = self
                    .client
                    .get(format!("{base}{path}"))
                    .send()
                    .await
                    .expect("a read with every fault lifted")
                    .status();
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "seed {}: {moment}: erased learner's GET {path}",
                    self.seed
                );
            }
            let email = &emails[&user];
            let rows = learner_rows(&session, &self.slot.keyspace, user, email).await;
            assert_eq!(
                rows,
                vec![],
                "seed {}: {moment}: erased learner {user} still has rows",
                self.seed
            );
            // The marker stays until it expires; so does the flush lock the
            // erasure took (it lets it expire, at most a lock period).
            let mut keys = learner_keys(&mut conn, user).await;
            let (marker, lock) = (erased_key(user), lock_key(user));
            keys.retain(|k| *k != marker);
            if keys == [lock.clone()] {
                let ttl: i64 = conn.pttl(&lock).await.expect("PTTL");
                assert!(
                    ttl > 0 && ttl <= FLUSH_LOCK.as_millis() as i64,
                    "seed {}: {moment}: erased learner {user}'s flush lock lives {ttl} ms",
                    self.seed
                );
                keys.clear();
            }
            assert_eq!(
                keys,
                Vec::<String>::new(),
                "seed {}: {moment}: erased learner {user} still has Redis keys",
                self.seed
            );
        }
        erased.len()
    }

    /// What the run did: faults, requests, learners erased.
    fn report(&self, name: &str, load: Duration, above: usize) {
        let t = &self.tally;
        let acked_learners = self.acked.lock().expect("acked").len();
        eprintln!(
            "{name}: seed {} | load {:?} | faults: {} replica SIGKILL, {} replica SIGTERM, \
             {} replica stalled past the flush lock ({} repairs done meanwhile), \
             {} Redis SIGKILL, {} CQL cut, {} CQL black-hole, {} CQL held past the request \
             timeout then delivered late, {} black-hole then cut, {} learners erased \
             ({} DELETEs sent) ({} replica starts refused) | acknowledged {} requests, \
             {} points on {} learners ({} of them signed up under the faults); {} attempts \
             failed and were retried, {} answered as duplicates, {} refused as their learner \
             was being erased; {} reads checked | repairs during the load: {} done, {} failed | \
             after flush: none below, {above} counts above acknowledged",
            self.seed,
            load,
            n(&t.replica_kills),
            n(&t.replica_terms),
            n(&t.stalls),
            n(&t.stall_repairs),
            n(&t.redis_kills),
            n(&t.cql_cuts),
            n(&t.cql_holds),
            n(&t.cql_long_holds),
            n(&t.cql_hold_then_cut),
            n(&t.erasures),
            n(&t.erasure_attempts),
            n(&t.failed_starts),
            n(&t.requests),
            n(&t.points),
            acked_learners,
            n(&t.sign_ups).saturating_sub(LEARNERS as u64),
            n(&t.failed_attempts),
            n(&t.duplicates),
            n(&t.refused_for_erased),
            n(&t.reads),
            n(&t.repairs),
            n(&t.failed_repairs),
        );
    }

    fn stop(&self) {
        for r in 0..REPLICAS {
            if let Some(replica) = self.take_replica(r) {
                replica.terminate();
            }
        }
    }
}

/// The tasks of a run: the clients and the three fault loops.
struct Load {
    clients: Vec<JoinHandle<()>>,
    faults: [JoinHandle<()>; 3],
}

/// Starts the cluster, its learners, the clients and the fault loops.
async fn under_load(seed: u64) -> (Arc<Cluster>, Load) {
    eprintln!("seed {seed} (ERRATA_TEST_SEED={seed} repeats it)");
    let mut rng = Rng::new(seed);
    let cluster = Cluster::start(seed).await;
    for _ in 0..LEARNERS {
        let learner = cluster.sign_up(&mut rng).await;
        cluster.learners.write().expect("learners").push(learner);
    }
    let clients = (0..CLIENTS)
        .map(|_| tokio::spawn(cluster.clone().client(rng.fork())))
        .collect();
    let faults = [
        tokio::spawn(cluster.clone().process_faults(rng.fork())),
        tokio::spawn(cluster.clone().network_faults(rng.fork())),
        tokio::spawn(cluster.clone().erasures(rng.fork())),
    ];
    (cluster, Load { clients, faults })
}

/// The load's length: `load`, and then until every kind of fault has
/// happened at least once.
async fn run_load(cluster: &Cluster, load: Duration) -> Duration {
    let started = Instant::now();
    tokio::time::sleep(load).await;
    while !cluster.every_fault_injected() {
        assert!(
            started.elapsed() < load + COVERAGE_DEADLINE,
            "seed {}: some fault never happened",
            cluster.seed
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

/// Nothing left to flush in Redis: no pending or in-flight deltas.
async fn nothing_left_to_flush(cluster: &Cluster) {
    let port = cluster.redis.lock().expect("redis").port;
    let mut conn = support::redis_server::client(port).await;
    let keys: Vec<String> = conn.keys("*").await.expect("KEYS");
    let left: Vec<String> = keys
        .into_iter()
        .filter(|k| k.ends_with(":pending") || k.ends_with(":inflight"))
        .collect();
    assert!(
        left.is_empty(),
        "seed {}: left in Redis: {left:?}",
        cluster.seed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_faults_lose_nothing_acknowledged_and_repair_makes_every_count_exact() {
    let (cluster, Load { clients, faults }) = under_load(seed_or(SEED_REPAIR_AFTER)).await;
    let load = run_load(&cluster, load_duration()).await;
    cluster.lift_faults(faults).await;
    cluster.end_load(clients).await;

    cluster.flush().await;
    let above = cluster.check_after_flush("after errata flush").await;
    cluster.report("random faults", load, above);
    let out = cluster.repair().await;
    assert!(out.is_ok(), "seed {}: repair failed: {out:?}", cluster.seed);
    cluster.flush().await;
    cluster.check_exact("after errata repair and a flush").await;
    let erased = cluster
        .check_erased("after errata repair and a flush")
        .await;
    nothing_left_to_flush(&cluster).await;
    eprintln!(
        "random faults: seed {} | verdicts: none below acknowledged after flush; the event \
         log exact; every count exact after repair; {erased} erased learners 404 on every \
         read, no CQL row, no Redis key but the marker",
        cluster.seed
    );
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_faults_with_repair_running_through_the_load_end_exact() {
    let (cluster, Load { clients, faults }) = under_load(seed_or(SEED_REPAIR_DURING)).await;
    // Repair over and over, beside the clients and the faults (a repair
    // cut off by a fault fails; the next one runs anyway).
    let repairing = Arc::new(AtomicBool::new(true));
    let repairs = {
        let (cluster, repairing) = (cluster.clone(), repairing.clone());
        tokio::spawn(async move {
            while repairing.load(Ordering::SeqCst) {
                let _ = cluster.repair().await;
            }
        })
    };
    let load = run_load(&cluster, load_duration()).await;
    cluster.lift_faults(faults).await;
    // The faults are over, the load and the repairs go on. Once no flush cut
    // off by a fault is left to replay, the repairs that start from then on
    // correct whatever the replays counted twice: three more must succeed
    // (so at least two started after that point).
    cluster.no_interrupted_flush().await;
    let quiet = n(&cluster.tally.repairs);
    let started = Instant::now();
    while n(&cluster.tally.repairs) < quiet + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "seed {}: repairs kept failing after the faults",
            cluster.seed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    repairing.store(false, Ordering::SeqCst);
    cluster.end_load(clients).await;
    repairs.await.expect("the repairs");

    cluster.flush().await;
    let above = cluster.check_after_flush("after the final flush").await;
    cluster.report("random faults, repair during the load", load, above);
    assert_eq!(above, 0, "seed {}: counts above acknowledged", cluster.seed);
    cluster.check_exact("after the final flush").await;
    let erased = cluster.check_erased("after the final flush").await;
    eprintln!(
        "random faults, repair during the load: seed {} | verdicts: none above or below \
         acknowledged after the final flush; the event log exact; {erased} erased learners \
         404 on every read, no CQL row, no Redis key but the marker",
        cluster.seed
    );
    cluster.stop();
}

//! Every timing and size that decides how the stores behave, in one place,
//! with the inequalities between them checked when errata is compiled.
//!
//! A change of policy is a change of this file: each value says what it
//! bounds, and each `const _: () = assert!(…)` below the values states one
//! rule the code relies on (a broken rule is a build error, not a bug
//! found under load).
//!
//! The names used in the rules:
//! - a *request* is one HTTP call (one CQL statement takes at most
//!   [`CQL_REQUEST_TIMEOUT`], one Redis call at most [`REDIS_CALL_TIMEOUT`]);
//! - a *flush* moves one learner's buffered deltas into the counters under
//!   the learner's flush lock ([`FLUSH_LOCK`]);
//! - a *repair* recomputes a learner's counters under the same lock, with a
//!   fence ([`FENCE`]) that holds the learner's commits meanwhile;
//! - an *erasure* deletes a learner under an erasure marker ([`ERASURE`]).

use std::time::Duration;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------
// Both stores
// ---------------------------------------------------------------------

/// How long a counted request is remembered, in every backend: a retry
/// within this time counts once. (The clients' retry horizon; in cql mode
/// it dominates Redis memory, see docs/operations.md.)
pub const DEDUP_WINDOW: Duration = secs(24 * 3600);

// ---------------------------------------------------------------------
// cql mode: the connections
// ---------------------------------------------------------------------

/// No CQL request may take longer than this (then 503). The driver gives
/// up on a statement after it; the statement may still reach a node later.
pub const CQL_REQUEST_TIMEOUT: Duration = secs(5);
/// How long connecting to a CQL node may take.
pub const CQL_CONNECTION_TIMEOUT: Duration = secs(5);
/// No Redis call may take longer than this; then the request fails with
/// 503.
pub const REDIS_CALL_TIMEOUT: Duration = secs(3);
/// How long connecting to Redis may take.
pub const REDIS_CONNECT_TIMEOUT: Duration = secs(2);
/// How long a write that acknowledges something waits for
/// `ERRATA_REDIS_MIN_REPLICAS` replicas to have it (Redis `WAIT`, sent in
/// the same call) before the request fails with 503. A replica on the
/// same network acknowledges in about a millisecond; waiting longer only
/// holds requests while a replica is away.
pub const REDIS_REPLICA_WAIT: Duration = secs(1);

// ---------------------------------------------------------------------
// cql mode: the Redis buffer's leases, locks and markers
// ---------------------------------------------------------------------

/// How long a request holds its deduplication lease before a retry may
/// take it over. Counting does not rest on it: an attempt slower than its
/// lease (a large report is several batches, each up to
/// [`CQL_REQUEST_TIMEOUT`]; see [`MAX_ATTEMPT`]) may see a retry take over,
/// rewrite the same event rows and count the request; the slow attempt's
/// commit then finds the lease another's and counts nothing.
pub const LEASE: Duration = secs(10);
/// How long a request waits for another attempt of itself to count or to
/// let go of its lease before it answers 503.
pub const LEASE_WAIT: Duration = LEASE.saturating_add(secs(2));
/// How long a counted request is remembered as a duplicate.
pub const MARKER_TTL: Duration = DEDUP_WINDOW;
/// How long a flusher (or repair, or erasure) owns a learner unless it
/// renews its lock.
pub const FLUSH_LOCK: Duration = secs(30);
/// How long a repair's fence stops a learner's commits unless renewed: if
/// `errata repair` dies, the learner's requests wait at most this long.
pub const FENCE: Duration = secs(5);
/// How long an erasure shadows the learner: its marker refuses their
/// leases, commits and takes, and its CQL tombstones hide their rows
/// written meanwhile. It must outlive whatever could still act for the
/// learner when the erasure starts: a request that passed its ownership
/// checks (its lease wait and its CQL calls) and a flusher's batch (the
/// flush lock, which the erasure waits for).
pub const ERASURE: Duration = secs(10 * 60);
/// How long a learner's read version lives after the change that set it
/// (as long as a counted request's marker): reads within it may be served
/// from a replica's memory, later ones read CQL again.
pub const READ_VERSION_TTL: Duration = MARKER_TTL;

// ---------------------------------------------------------------------
// cql mode: waiting for another process
// ---------------------------------------------------------------------

/// How often a waiting request or command looks again (a lease, a fence).
pub const POLL: Duration = millis(10);
/// How long a request waits for a repair of its learner before it answers
/// 503 (a repair holds a learner for the time of one log read).
pub const FENCE_WAIT: Duration = secs(2);
/// How long a read waits for a flush of the learner to finish before it
/// answers 503 (a counter batch normally takes milliseconds).
pub const READ_WAIT: Duration = secs(2);
/// How often a waiting read looks again.
pub const READ_POLL: Duration = millis(10);
/// How long an erasure waits for a flusher's batch (or a repair) that
/// holds the learner's lock.
pub const ERASURE_LOCK_WAIT: Duration = FLUSH_LOCK.saturating_add(secs(2));
/// How often an erasure looks again for the flush lock.
pub const ERASURE_LOCK_POLL: Duration = millis(20);
/// How long a repair waits for a flusher (or an earlier repair) that holds
/// the learner's lock: longer than the lock lives, so a holder that keeps
/// it until it expires (its batch got no answer) is waited out.
pub const REPAIR_LOCK_WAIT: Duration = FLUSH_LOCK.saturating_add(secs(2));
/// How often a repair looks again for the flush lock.
pub const REPAIR_LOCK_POLL: Duration = millis(20);
/// How often a repair renews its lock and fence (both live far longer).
pub const REPAIR_RENEW_EVERY: Duration = secs(1);

// ---------------------------------------------------------------------
// cql mode: the flusher
// ---------------------------------------------------------------------

/// How often the flusher drains Redis unless configured otherwise
/// (`ERRATA_FLUSH_INTERVAL_MS`), in milliseconds.
pub const FLUSH_INTERVAL_MS: u64 = 1000;
/// Learners one flusher tick takes from each dirty shard.
pub const LEARNERS_PER_TICK: usize = 64;
/// Learners a flusher flushes at once (each is a few Redis and CQL round
/// trips; one at a time, a replica flushed only ~100 learners a second).
pub const FLUSH_CONCURRENCY: usize = 16;
/// A flusher stops retrying to finish a flush this long before its lock
/// would expire if no renewal had reached Redis (for the latency of the
/// last call and the clocks' drift).
pub const FINISH_MARGIN: Duration = secs(2);
/// How often a flusher retries to finish a flush while Redis is away.
pub const FINISH_RETRY: Duration = millis(100);
/// How often a flusher looks for deltas whose learner lost its dirty mark.
pub const SWEEP_EVERY: Duration = secs(60);
/// How long `errata flush` (and a shutdown's drain) keeps draining before
/// it gives up.
pub const DRAIN_DEADLINE: Duration = secs(60);
/// How long a drain waits before it looks again at a learner another
/// flusher holds.
pub const DRAIN_POLL: Duration = millis(20);

// ---------------------------------------------------------------------
// cql mode: batches and sizes
// ---------------------------------------------------------------------

/// Events per unlogged batch of an ingest, to stay far below batch limits.
pub const EVENTS_PER_BATCH: usize = 16;
/// At most this many bytes of values in a batch that spans two partitions
/// (a quarter of the servers' 1 MiB limit on such batches).
pub const BATCH_BYTES: usize = 256 * 1024;
/// Sentence writes per refill batch of a repair. (A repair's counter
/// corrections go in one batch, whatever their number: it touches the
/// learner's partition alone, which servers apply whole and do not
/// size-check.)
pub const CORRECTIONS_PER_BATCH: usize = 128;
/// How many of a learner's latest events repair searches for the
/// sentences their labels keep (as many as practice used to search).
pub const REFILL_EVENTS: usize = 200;
/// Characters of the utterance kept with each event.
pub const SNIPPET_CHARS: usize = 500;
/// A sentence whose correction is longer than this many characters is not
/// kept for practice (a correction of a spoken sentence is far shorter; the
/// bound keeps a practice read of the labels small). The event keeps it.
pub const MAX_PRACTISED_CORRECTION: usize = 1_000;

// ---------------------------------------------------------------------
// cql mode: what a replica remembers
// ---------------------------------------------------------------------

/// How long a read of a learner's durable rows is served from memory at
/// most, whatever the learner's read version says (the cache's trust).
pub const READ_TTL: Duration = secs(60);
/// What the read cache may hold: about 32 MiB of reads.
pub const READ_CACHE_BYTES: u64 = 32 << 20;
/// Reads expected at that weight, for the cache's sizing.
pub const READ_CACHE_EXPECTED: usize = 50_000;
/// How long an ownership fact (a learner, conversation or utterance
/// exists) is trusted, from the moment its read began.
pub const FACT_TTL: Duration = secs(5 * 60);
/// What the ownership cache may hold: about 32 MiB of facts (utterances
/// weigh their snippet).
pub const FACT_CACHE_BYTES: u64 = 32 << 20;
/// Facts expected at that weight, for the cache's sizing.
pub const FACT_CACHE_EXPECTED: usize = 200_000;
/// How many of its learners' month buckets and first spellings a replica
/// remembers having written (each a few dozen bytes), so that later
/// reports leave those unchanged rewrites out of their batch.
pub const WRITTEN_CACHE_ENTRIES: usize = 200_000;

// ---------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------

/// The longest one attempt of a report acts for its learner once its
/// owners are checked: the wait for its lease, its batches (one per
/// [`EVENTS_PER_BATCH`] events and lapses of the largest report, and the
/// labels'), and its Redis calls (lease, commit or abandon).
pub const MAX_ATTEMPT: Duration =
    LEASE_WAIT
        .saturating_add(CQL_REQUEST_TIMEOUT.saturating_mul(
            ((2 * crate::domain::MAX_POINTS).div_ceil(EVENTS_PER_BATCH) + 1) as u32,
        ))
        .saturating_add(REDIS_CALL_TIMEOUT.saturating_mul(3));

const fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A Redis call ends (or times out) well within a lease, so a request that
/// waited for a fence still holds its lease when it commits.
const _: () = assert!(ms(FENCE_WAIT) + ms(REDIS_CALL_TIMEOUT) < ms(LEASE));
/// A write and its wait for replicas are one Redis call: the wait leaves
/// the call at least as much time again for its round trip and script.
const _: () = assert!(2 * ms(REDIS_REPLICA_WAIT) <= ms(REDIS_CALL_TIMEOUT));
/// The waits for replicas do not eat an attempt's lease: the lease's own
/// wait, then a fence wait and the commit's call (its wait included) end
/// well before the lease lapses.
const _: () = assert!(ms(REDIS_REPLICA_WAIT) + ms(FENCE_WAIT) + ms(REDIS_CALL_TIMEOUT) < ms(LEASE));
/// A counter batch sent right after the take ends (or is given up by the
/// driver) before the lock could lapse, with the margin a flusher keeps to
/// finish.
const _: () = assert!(ms(CQL_REQUEST_TIMEOUT) + ms(FINISH_MARGIN) < ms(FLUSH_LOCK));
/// The flusher's lock is longer than the driver's timeout by far: a batch
/// the driver gave up on is not the only thing the lock must cover.
const _: () = assert!(2 * ms(CQL_REQUEST_TIMEOUT) <= ms(FLUSH_LOCK));
/// A repair renews its lock and fence several times before either lapses.
const _: () = assert!(3 * ms(REPAIR_RENEW_EVERY) <= ms(FENCE));
const _: () = assert!(ms(FENCE) < ms(FLUSH_LOCK));
/// A request waits for its own earlier attempt's lease to lapse.
const _: () = assert!(ms(LEASE) < ms(LEASE_WAIT));
/// A request is remembered as counted for longer than it can be leased.
const _: () = assert!(ms(LEASE) < ms(MARKER_TTL));
/// The erasure's marker (and its tombstones, stamped that far ahead)
/// outlives whatever acts for the learner when it starts: an attempt that
/// passed its checks, and a flusher's batch under its lock, which the
/// erasure waits for.
const _: () = assert!(ms(MAX_ATTEMPT) + ms(ERASURE_LOCK_WAIT) + ms(FLUSH_LOCK) < ms(ERASURE));
/// An erasure and a repair wait out a lock kept until it expires.
const _: () = assert!(ms(FLUSH_LOCK) < ms(ERASURE_LOCK_WAIT));
const _: () = assert!(ms(FLUSH_LOCK) < ms(REPAIR_LOCK_WAIT));
/// Ownership facts read before an erasure stop being trusted long before
/// its marker goes.
const _: () = assert!(2 * ms(FACT_TTL) <= ms(ERASURE));
/// A replica trusts a remembered read for less than half the life of the
/// read version it was kept under.
const _: () = assert!(2 * ms(READ_TTL) < ms(READ_VERSION_TTL));
/// A flusher gives up finishing before its lock could lapse.
const _: () = assert!(ms(FINISH_RETRY) < ms(FINISH_MARGIN));
const _: () = assert!(ms(FINISH_MARGIN) < ms(FLUSH_LOCK));
/// Batches stay well under Cassandra's 1 MiB limit on batches spanning
/// partitions.
const _: () = assert!(4 * BATCH_BYTES <= 1 << 20);
/// A drain outlasts a lock it may have to wait for.
const _: () = assert!(ms(FLUSH_LOCK) < ms(DRAIN_DEADLINE));

//! One typed wrapper per Lua script of `scripts/`: the only place that
//! knows in which order a script takes its `KEYS` and `ARGV`.
//!
//! A wrapper is a struct with the learner's id and the call's values; its
//! [`script!`] declaration lists, in the script's order, the name of each
//! key with the key it is (always one of the learner's, so the script runs
//! on the learner's Redis Cluster slot) and the name of each argument with
//! its value. Each `.lua` file binds the same names at its top, in the same
//! order (`local marker = KEYS[1]`, …) and uses only those names after;
//! a script that takes a variable tail of arguments binds where the tail
//! starts (`local first_delta = 5`). The tests below hold every script's
//! text against its wrapper, so the two cannot drift apart silently.

use std::sync::LazyLock;

use ::redis::{FromRedisValue, Script, ScriptInvocation, ToRedisArgs, ToSingleRedisArg};
use uuid::Uuid;

use super::keys::{
    batch_key, counted_key, epoch_key, erased_key, fence_key, inflight_key, inflight_weeks_key,
    lock_key, open_key, pending_key, pending_weeks_key, request_key, round_key, since_key,
    version_key,
};
use super::{bounded, Connection};
use crate::domain::ErrorKey;
use crate::store::StoreError;

/// What every wrapper knows of its script.
pub(super) trait LuaScript {
    /// The script's file (`scripts/{NAME}.lua`), and its label in the
    /// call counter.
    const NAME: &'static str;
    /// The text loaded into Redis: the script after its prelude, if any.
    const SOURCE: &'static str;
    /// The script's own file, whose top binds `KEYS` and `ARGV`.
    #[cfg(test)]
    const TEXT: &'static str;
    /// The names of its keys, `KEYS[1]` first.
    #[cfg(test)]
    const KEYS: &'static [&'static str];
    /// The names of its arguments, `ARGV[1]` first.
    #[cfg(test)]
    const ARGS: &'static [&'static str];
    /// The name the script gives to the first of a variable tail of
    /// arguments after the named ones, if it takes one.
    #[cfg(test)]
    const TAIL: Option<&'static str>;

    /// The script, loaded once per process.
    fn script() -> &'static Script;

    /// The keys of this call, in `KEYS` order.
    fn keys(&self) -> Vec<String>;

    /// Appends the arguments of this call, in `ARGV` order.
    fn write_args(&self, invocation: &mut ScriptInvocation<'_>);

    /// The call, ready to send (alone, or in a pipeline).
    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = Self::script().prepare_invoke();
        for key in self.keys() {
            invocation.key(key);
        }
        self.write_args(&mut invocation);
        invocation
    }

    /// Runs the call with the call timeout (loading the script first if
    /// the server does not know it yet).
    async fn invoke<T: FromRedisValue>(&self, conn: &mut Connection) -> Result<T, StoreError> {
        bounded(self.invocation().invoke_async(conn)).await
    }
}

/// Each named key and argument is exactly one Redis value, so that names
/// and `KEYS[n]` / `ARGV[n]` positions cannot slip apart by a value that
/// writes several.
fn one(value: impl ToSingleRedisArg) -> impl ToRedisArgs {
    value
}

/// Declares a wrapper's script: its file (after `clock.lua` when it reads
/// the server's clock), its keys and its arguments in order, and its tail
/// of further arguments if any. `$s` names the wrapper in the expressions.
macro_rules! script {
    (@tail) => { None };
    (@tail $tail:ident) => { Some(stringify!($tail)) };
    (
        $wrapper:ty = $name:literal $(after $prelude:literal)?;
        keys($k:ident) { $($key:ident: $key_value:expr),+ $(,)? }
        args($a:ident) { $($arg:ident: $arg_value:expr),* $(,)? }
        $(tail($t:ident) { $tail:ident: $tail_values:expr $(,)? })?
    ) => {
        impl LuaScript for $wrapper {
            const NAME: &'static str = $name;
            const SOURCE: &'static str = concat!(
                $(include_str!(concat!("scripts/", $prelude, ".lua")),)?
                include_str!(concat!("scripts/", $name, ".lua"))
            );
            #[cfg(test)]
            const TEXT: &'static str = include_str!(concat!("scripts/", $name, ".lua"));
            #[cfg(test)]
            const KEYS: &'static [&'static str] = &[$(stringify!($key)),+];
            #[cfg(test)]
            const ARGS: &'static [&'static str] = &[$(stringify!($arg)),*];
            #[cfg(test)]
            const TAIL: Option<&'static str> = script!(@tail $($tail)?);

            fn script() -> &'static Script {
                static SCRIPT: LazyLock<Script> =
                    LazyLock::new(|| Script::new(<$wrapper as LuaScript>::SOURCE));
                &SCRIPT
            }

            fn keys(&self) -> Vec<String> {
                let $k = self;
                vec![$($key_value),+]
            }

            #[allow(unused_variables)]
            fn write_args(&self, invocation: &mut ScriptInvocation<'_>) {
                let $a = self;
                $(invocation.arg(one($arg_value));)*
                $(
                    let $t = self;
                    for value in $tail_values {
                        invocation.arg(value);
                    }
                )?
            }
        }
    };
}

/// Takes (or keeps) the deduplication lease of request `fingerprint`.
pub(super) struct Lease<'a> {
    pub user: Uuid,
    pub fingerprint: Uuid,
    /// The time this attempt's events would carry, unless an earlier
    /// attempt's is kept.
    pub proposed_ms: i64,
    pub lease_ms: u64,
    pub marker_ttl_ms: u64,
    pub token: &'a str,
}

script! {
    Lease<'_> = "lease" after "clock";
    keys(s) {
        marker: request_key(s.user, s.fingerprint),
        open: open_key(s.user),
        erased: erased_key(s.user),
    }
    args(s) {
        proposed_ms: s.proposed_ms,
        lease_ms: s.lease_ms,
        marker_ttl_ms: s.marker_ttl_ms,
        token: s.token,
        fingerprint: s.fingerprint.to_string(),
    }
}

/// Counts leased request `fingerprint`: its deltas, its marker, a new read
/// version.
pub(super) struct Commit<'a> {
    pub user: Uuid,
    pub fingerprint: Uuid,
    /// The lease's token: nothing is counted unless the lease is still it.
    pub token: &'a str,
    pub marker_ttl_ms: u64,
    pub version_ttl_ms: u64,
    pub deltas: &'a [(ErrorKey, i64)],
}

script! {
    Commit<'_> = "commit" after "clock";
    keys(s) {
        marker: request_key(s.user, s.fingerprint),
        pending: pending_key(s.user),
        since: since_key(s.user),
        open: open_key(s.user),
        fence: fence_key(s.user),
        counted: counted_key(s.user),
        erased: erased_key(s.user),
        pending_weeks: pending_weeks_key(s.user),
        version: version_key(s.user),
    }
    args(s) {
        token: s.token,
        marker_ttl_ms: s.marker_ttl_ms,
        fingerprint: s.fingerprint.to_string(),
        version_ttl_ms: s.version_ttl_ms,
    }
    tail(s) {
        first_delta: s.deltas.iter().map(|(key, delta)| (key.encode(), *delta)),
    }
}

/// Lets request `fingerprint` go uncounted, keeping its time for a retry.
pub(super) struct Abandon<'a> {
    pub user: Uuid,
    pub fingerprint: Uuid,
    pub token: &'a str,
    pub marker_ttl_ms: u64,
}

script! {
    Abandon<'_> = "abandon" after "clock";
    keys(s) {
        marker: request_key(s.user, s.fingerprint),
        open: open_key(s.user),
        erased: erased_key(s.user),
    }
    args(s) {
        token: s.token,
        marker_ttl_ms: s.marker_ttl_ms,
        fingerprint: s.fingerprint.to_string(),
    }
}

/// A flusher takes the learner's deltas as its batch.
pub(super) struct Take<'a> {
    pub user: Uuid,
    pub token: &'a str,
    pub lock_ms: u64,
}

script! {
    Take<'_> = "take" after "clock";
    keys(s) {
        pending: pending_key(s.user),
        inflight: inflight_key(s.user),
        lock: lock_key(s.user),
        epoch: epoch_key(s.user),
        since: since_key(s.user),
        batch: batch_key(s.user),
        pending_weeks: pending_weeks_key(s.user),
        inflight_weeks: inflight_weeks_key(s.user),
        erased: erased_key(s.user),
    }
    args(s) {
        token: s.token,
        lock_ms: s.lock_ms,
    }
}

/// A flusher's batch is applied: its in-flight deltas go.
pub(super) struct Done<'a> {
    pub user: Uuid,
    pub token: &'a str,
}

script! {
    Done<'_> = "done" after "clock";
    keys(s) {
        inflight: inflight_key(s.user),
        lock: lock_key(s.user),
        epoch: epoch_key(s.user),
        batch: batch_key(s.user),
        inflight_weeks: inflight_weeks_key(s.user),
    }
    args(s) {
        token: s.token,
    }
}

/// A flusher or a repair lets the learner go.
pub(super) struct Release<'a> {
    pub user: Uuid,
    pub token: &'a str,
}

script! {
    Release<'_> = "release" after "clock";
    keys(s) {
        lock: lock_key(s.user),
        epoch: epoch_key(s.user),
        fence: fence_key(s.user),
    }
    args(s) {
        token: s.token,
    }
}

/// The holder of the flush lock keeps it (and its fence).
pub(super) struct Renew<'a> {
    pub user: Uuid,
    pub token: &'a str,
    pub lock_ms: u64,
    pub fence_ms: u64,
}

script! {
    Renew<'_> = "renew" after "clock";
    keys(s) {
        lock: lock_key(s.user),
        fence: fence_key(s.user),
    }
    args(s) {
        token: s.token,
        lock_ms: s.lock_ms,
        fence_ms: s.fence_ms,
    }
}

/// The holder of the flush lock stops the learner's commits.
pub(super) struct Fence<'a> {
    pub user: Uuid,
    pub token: &'a str,
    pub fence_ms: u64,
}

script! {
    Fence<'_> = "fence" after "clock";
    keys(s) {
        lock: lock_key(s.user),
        fence: fence_key(s.user),
    }
    args(s) {
        token: s.token,
        fence_ms: s.fence_ms,
    }
}

/// A repair reads the learner's buffer at one instant and lifts its fence.
pub(super) struct Snapshot<'a> {
    pub user: Uuid,
    pub token: &'a str,
    pub marker_ttl_ms: u64,
}

script! {
    Snapshot<'_> = "snapshot" after "clock";
    keys(s) {
        lock: lock_key(s.user),
        fence: fence_key(s.user),
        open: open_key(s.user),
        pending: pending_key(s.user),
        inflight: inflight_key(s.user),
        pending_weeks: pending_weeks_key(s.user),
        inflight_weeks: inflight_weeks_key(s.user),
    }
    args(s) {
        token: s.token,
        marker_ttl_ms: s.marker_ttl_ms,
    }
}

/// Moves the learner's exercise rotation along.
pub(super) struct Round {
    pub user: Uuid,
}

script! {
    Round = "round";
    keys(s) {
        round: round_key(s.user),
        erased: erased_key(s.user),
    }
    args(s) {}
}

fn named<S: LuaScript>() -> (&'static Script, &'static str) {
    (S::script(), S::NAME)
}

/// Every script with its name, for the call counter.
pub(super) fn named_scripts() -> [(&'static Script, &'static str); 10] {
    [
        named::<Lease>(),
        named::<Commit>(),
        named::<Abandon>(),
        named::<Take>(),
        named::<Done>(),
        named::<Release>(),
        named::<Renew>(),
        named::<Fence>(),
        named::<Snapshot>(),
        named::<Round>(),
    ]
}


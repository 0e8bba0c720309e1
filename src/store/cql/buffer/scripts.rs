//! One typed wrapper per Lua script of `scripts/`: the only place that
//! knows in which order a script takes its `KEYS` and `ARGV`.
//!
//! A wrapper is a struct with the learner's id and the call's values; its
//! `script!` declaration lists, in the script's order, the name of each
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

use super::connection::Acknowledged;
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

    /// Runs the call; with replicas required, `WAIT` follows it in the
    /// same round trip and the answer comes with how many replicas
    /// acknowledged (`None` when none are required: the call is sent
    /// alone, as [`LuaScript::invoke`] sends it).
    async fn invoke_waited<T: FromRedisValue>(
        &self,
        conn: &mut Connection,
    ) -> Result<(T, Option<Acknowledged>), StoreError> {
        if conn.min_replicas() == 0 {
            return Ok((self.invoke(conn).await?, None));
        }
        let invocation = self.invocation();
        let mut pipe = ::redis::pipe();
        pipe.invoke_script(&invocation);
        let ((answer,), acknowledged): ((T,), _) = conn.waited(pipe, &[&invocation]).await?;
        Ok((answer, Some(acknowledged)))
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
/// of further arguments if any; in `keys(s)`, `args(s)` and `tail(s)`, `s`
/// names the wrapper for the expressions that follow.
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
        erased: erased_key(s.user),
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
        batch: batch_key(s.user),
    }
    args(s) {
        token: s.token,
        marker_ttl_ms: s.marker_ttl_ms,
    }
}

/// A repair takes the learner's flush lock, unless they are being erased.
pub(super) struct Claim<'a> {
    pub user: Uuid,
    pub token: &'a str,
    pub lock_ms: u64,
}

script! {
    Claim<'_> = "claim";
    keys(s) {
        lock: lock_key(s.user),
        erased: erased_key(s.user),
    }
    args(s) {
        token: s.token,
        lock_ms: s.lock_ms,
    }
}

/// A failed erasure lifts its own marker.
pub(super) struct Unmark<'a> {
    pub user: Uuid,
    pub token: &'a str,
}

script! {
    Unmark<'_> = "unmark";
    keys(s) {
        erased: erased_key(s.user),
    }
    args(s) {
        token: s.token,
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
pub(super) fn named_scripts() -> [(&'static Script, &'static str); 12] {
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
        named::<Claim>(),
        named::<Unmark>(),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::cql::buffer::keys::learner_of;

    /// The code of each line, comments and blank lines left out.
    fn code(text: &str) -> Vec<&str> {
        text.lines()
            .map(|line| line.split("--").next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// Whether `name` appears in `code` as a whole word.
    fn uses(code: &str, name: &str) -> bool {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        code.match_indices(name).any(|(at, _)| {
            !code[..at].ends_with(word) && !code[at + name.len()..].starts_with(word)
        })
    }

    /// How a script's text disagrees with the names a wrapper passes: its
    /// first lines must bind exactly those keys, then those arguments (and
    /// the tail's first index), in order; after them it must not reach
    /// into `KEYS` or `ARGV` by number, only into the tail, and it must
    /// use every name it binds.
    fn disagreements(text: &str, keys: &[&str], args: &[&str], tail: Option<&str>) -> Vec<String> {
        let lines = code(text);
        let mut expected: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, name)| format!("local {name} = KEYS[{}]", i + 1))
            .chain(
                args.iter()
                    .enumerate()
                    .map(|(i, name)| format!("local {name} = ARGV[{}]", i + 1)),
            )
            .collect();
        if let Some(tail) = tail {
            expected.push(format!("local {tail} = {}", args.len() + 1));
        }
        let mut problems = Vec::new();
        for (i, want) in expected.iter().enumerate() {
            let found = lines.get(i).copied().unwrap_or("the end of the script");
            if found != want {
                problems.push(format!(
                    "line {} of code: `{want}` expected, `{found}` found",
                    i + 1
                ));
            }
        }
        let body = lines.get(expected.len()..).unwrap_or_default().join("\n");
        if body.contains("KEYS") {
            problems.push("KEYS used after the bindings".to_owned());
        }
        for (at, _) in body.match_indices("ARGV") {
            let before = body[..at].chars().next_back();
            let after = body[at + 4..]
                .strip_prefix('[')
                .and_then(|i| i.chars().next());
            let into_tail =
                before == Some('#') || after.is_some_and(|c| !c.is_ascii_digit() && c != ']');
            if tail.is_none() || !into_tail {
                problems.push(format!(
                    "ARGV used after the bindings: `{}`",
                    &body[at..(at + 8).min(body.len())]
                ));
            }
        }
        for name in keys.iter().chain(args).chain(&tail) {
            if !uses(&body, name) {
                problems.push(format!("`{name}` bound but never used"));
            }
        }
        problems
    }

    /// Everything wrong with one wrapper and its script, by script name.
    fn check<S: LuaScript>(call: &S, user: Uuid) -> (&'static str, Vec<String>) {
        let mut problems = disagreements(S::TEXT, S::KEYS, S::ARGS, S::TAIL);
        let Some(prelude) = S::SOURCE.strip_suffix(S::TEXT) else {
            return (
                S::NAME,
                vec!["the script does not end its source".to_owned()],
            );
        };
        let prelude = code(prelude).join("\n");
        if prelude.contains("KEYS") || prelude.contains("ARGV") {
            problems.push("the prelude reads KEYS or ARGV".to_owned());
        }
        if S::TEXT.contains("now_ms(") && !prelude.contains("function now_ms(") {
            problems.push("reads the clock without clock.lua".to_owned());
        }
        let keys = call.keys();
        if keys.len() != S::KEYS.len() {
            problems.push(format!("{} keys for {} names", keys.len(), S::KEYS.len()));
        }
        if keys.iter().collect::<BTreeSet<_>>().len() != keys.len() {
            problems.push(format!("a key passed twice: {keys:?}"));
        }
        // The tag is the first {...} of the key, so it decides the slot.
        let tag = format!("{{{user}}}");
        for key in &keys {
            if key.find('{') != key.find(&tag) || learner_of(key) != Some(user) {
                problems.push(format!("{key} is not in the learner's slot"));
            }
        }
        (S::NAME, problems)
    }

    #[test]
    fn every_script_binds_exactly_what_its_wrapper_passes() {
        let user = Uuid::new_v4();
        let fingerprint = Uuid::new_v4();
        let token = "token";
        let deltas = [(
            ErrorKey {
                category: "a".into(),
                subcategory: "b".into(),
            },
            2,
        )];
        let checked = [
            check(
                &Lease {
                    user,
                    fingerprint,
                    proposed_ms: 1,
                    lease_ms: 2,
                    marker_ttl_ms: 3,
                    token,
                },
                user,
            ),
            check(
                &Commit {
                    user,
                    fingerprint,
                    token,
                    marker_ttl_ms: 1,
                    version_ttl_ms: 2,
                    deltas: &deltas,
                },
                user,
            ),
            check(
                &Abandon {
                    user,
                    fingerprint,
                    token,
                    marker_ttl_ms: 1,
                },
                user,
            ),
            check(
                &Take {
                    user,
                    token,
                    lock_ms: 1,
                },
                user,
            ),
            check(&Done { user, token }, user),
            check(&Release { user, token }, user),
            check(
                &Renew {
                    user,
                    token,
                    lock_ms: 1,
                    fence_ms: 2,
                },
                user,
            ),
            check(
                &Fence {
                    user,
                    token,
                    fence_ms: 1,
                },
                user,
            ),
            check(
                &Snapshot {
                    user,
                    token,
                    marker_ttl_ms: 1,
                },
                user,
            ),
            check(&Round { user }, user),
            check(
                &Claim {
                    user,
                    token,
                    lock_ms: 1,
                },
                user,
            ),
            check(&Unmark { user, token }, user),
        ];
        let wrong: Vec<_> = checked.iter().filter(|(_, p)| !p.is_empty()).collect();
        assert!(
            wrong.is_empty(),
            "scripts and wrappers disagree: {wrong:#?}"
        );

        // One wrapper per script file (the clock is a prelude, no script),
        // and every one of them named for the call counter.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/cql/buffer/scripts");
        let files: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter_map(|file| Some(file.strip_suffix(".lua")?.to_owned()))
            .filter(|name| name != "clock")
            .collect();
        let wrapped: BTreeSet<String> = checked.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(wrapped, files);
        let counted: BTreeSet<String> =
            named_scripts().iter().map(|(_, n)| n.to_string()).collect();
        assert_eq!(counted, files);
    }

    #[test]
    fn the_clock_reads_no_keys_or_arguments() {
        let clock = code(include_str!("scripts/clock.lua")).join("\n");
        assert!(!clock.contains("KEYS") && !clock.contains("ARGV"));
    }

    /// The check itself: each way a script can drift from its wrapper is
    /// caught.
    #[test]
    fn a_script_that_drifts_from_its_wrapper_is_caught() {
        let drifts = |text: &str| !disagreements(text, Lease::KEYS, Lease::ARGS, None).is_empty();
        assert!(!drifts(Lease::TEXT));
        let swapped = Lease::TEXT
            .replace("local marker = KEYS[1]", "local marker = KEYS[@]")
            .replace("local open = KEYS[2]", "local marker = KEYS[2]")
            .replace("local marker = KEYS[@]", "local open = KEYS[1]");
        assert!(drifts(&swapped), "keys swapped");
        let swapped = Lease::TEXT
            .replace("ARGV[2]", "ARGV[@]")
            .replace("ARGV[3]", "ARGV[2]");
        assert!(
            drifts(&swapped.replace("ARGV[@]", "ARGV[3]")),
            "arguments swapped"
        );
        let unpassed = Lease::TEXT.replace("return {'busy'}", "return {KEYS[4]}");
        assert!(drifts(&unpassed), "a key the wrapper does not pass");
        let unpassed = Lease::TEXT.replace("return {'busy'}", "return {ARGV[6]}");
        assert!(drifts(&unpassed), "an argument the wrapper does not pass");
        let unused = Lease::TEXT.replace("return acquire(proposed_ms)", "return acquire(now)");
        assert!(drifts(&unused), "an argument passed but unused");
        let late = Lease::TEXT.replace("local erased = KEYS[3]\n", "");
        assert!(
            drifts(&late.replace(
                "local now = now_ms()",
                "local now = now_ms()\nlocal erased = KEYS[3]"
            )),
            "a binding below the top"
        );
        // A tail is read only when the wrapper passes one.
        let tail = Commit::TEXT;
        assert!(disagreements(tail, Commit::KEYS, Commit::ARGS, Commit::TAIL).is_empty());
        assert!(!disagreements(tail, Commit::KEYS, Commit::ARGS, None).is_empty());
    }
}

//! What the monitoring files (`deploy/prometheus/alerts.yml`,
//! `deploy/grafana/errata.json`) ask of errata's metrics, and whether a
//! real scrape of `/metrics` has it: every metric they name, every label
//! they match or group by, and every label value they match exactly. A
//! renamed metric would otherwise blank a panel or disarm an alert without
//! a word.
//!
//! The names are read from the files themselves (a scanner of PromQL's
//! identifiers, [`references`]), never from a list kept here. What this
//! module does keep is which metrics a store cannot export ([`not_in`]):
//! the embedded test checks everything but the cql store's metrics, the
//! cql test everything but the embedded store's, and a unit test holds
//! that nothing is left to neither.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use errata::config::StoreKind;
use reqwest::StatusCode;
use serde_json::Value;

use crate::http::{expect_status, Api, Learner};

/// The repository errata lives in.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository")
        .to_owned()
}

pub const ALERTS: &str = "deploy/prometheus/alerts.yml";
pub const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yml";
pub const DASHBOARD: &str = "deploy/grafana/errata.json";
pub const OPERATIONS: &str = "docs/operations.md";

/// Labels Prometheus adds to every series of a target: not errata's.
pub const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// A label matcher of a selector: `label op "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

/// A series selector of an expression: the metric and its matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

/// What one PromQL expression names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left/right`.
    pub grouping: Vec<String>,
}

/// One expression of the monitoring files and where it is.
#[derive(Debug, Clone)]
pub struct Reference {
    /// "alert ErrataFlushLagHigh", "panel \"Flush lag\" A", …
    pub place: String,
    pub expr: String,
    pub names: Names,
}

const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// The metrics, matchers and grouping labels a PromQL expression names.
/// Strings, comments, ranges (`[5m]`) and Grafana's variables are skipped;
/// an identifier followed by `(` is a function. Panics on what it cannot
/// read (an unclosed brace or string), so a file it misreads fails loudly.
pub fn promql_names(expr: &str) -> Names {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Names::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i, expr).1;
        } else if c == '[' {
            let end = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .unwrap_or_else(|| panic!("unclosed [ in {expr}"));
            i += end + 1;
        } else if c == '{' {
            // A selector without a metric name: its matchers still count.
            let (matchers, next) = read_matchers(&chars, i, expr);
            names.selectors.push(Selector {
                metric: String::new(),
                matchers,
            });
            i = next;
        } else if c == '$' {
            // A Grafana variable: $name or ${name}.
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (0.99, 1e3, 5m after offset).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            let lower = word.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    let close = chars[next..]
                        .iter()
                        .position(|&c| c == ')')
                        .unwrap_or_else(|| panic!("unclosed ( in {expr}"));
                    let list: String = chars[next + 1..next + close].iter().collect();
                    names.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = next + close + 1;
                }
            } else if AGGREGATIONS.contains(&lower.as_str())
                || KEYWORDS.contains(&lower.as_str())
                || chars.get(next) == Some(&'(')
            {
                // An aggregation, operator or function.
            } else {
                let mut matchers = Vec::new();
                if chars.get(next) == Some(&'{') {
                    let (read, after) = read_matchers(&chars, next, expr);
                    matchers = read;
                    i = after;
                }
                names.selectors.push(Selector {
                    metric: word,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    names
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The string literal starting at `start` (its quote): its value and the
/// index after its closing quote.
fn skip_string(chars: &[char], start: usize, expr: &str) -> (String, usize) {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => {
                if let Some(&escaped) = chars.get(i + 1) {
                    value.push(escaped);
                }
                i += 2;
            }
            c if c == quote => return (value, i + 1),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    panic!("unclosed string in {expr}")
}

/// The matchers of `{…}` starting at `start`, and the index after `}`.
fn read_matchers(chars: &[char], start: usize, expr: &str) -> (Vec<Matcher>, usize) {
    let mut matchers = Vec::new();
    let mut i = start + 1;
    loop {
        i = next_non_space(chars, i);
        match chars.get(i) {
            None => panic!("unclosed {{ in {expr}"),
            Some('}') => return (matchers, i + 1),
            Some(',') => i += 1,
            Some(&c) if is_ident_start(c) => {
                let from = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let label: String = chars[from..i].iter().collect();
                i = next_non_space(chars, i);
                let from = i;
                while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
                    i += 1;
                }
                let op: String = chars[from..i].iter().collect();
                assert!(
                    ["=", "!=", "=~", "!~"].contains(&op.as_str()),
                    "matcher {label}{op} in {expr}"
                );
                i = next_non_space(chars, i);
                assert!(
                    matches!(chars.get(i), Some('"' | '\'' | '`')),
                    "matcher {label}{op} without a string in {expr}"
                );
                let (value, next) = skip_string(chars, i, expr);
                matchers.push(Matcher { label, op, value });
                i = next;
            }
            Some(c) => panic!("unexpected {c:?} in the matchers of {expr}"),
        }
    }
}

/// The rules of an alerting-rules file: (alert name, expression,
/// annotations). Reads the file's own layout (block or plain scalars under
/// `expr:`, one-line annotations); [`promtool_rule_count`] confirms it
/// found every rule.
pub fn alert_rules(yaml: &str) -> Vec<(String, String, BTreeMap<String, String>)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut rules: Vec<(String, String, BTreeMap<String, String>)> = Vec::new();
    let mut in_annotations: Option<usize> = None;
    let mut l = 0;
    while l < lines.len() {
        let line = lines[l];
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        l += 1;
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if in_annotations.is_some_and(|at| indent <= at) {
            in_annotations = None;
        }
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push((unquote(name), String::new(), BTreeMap::new()));
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rule = rules.last_mut().expect("expr: before any - alert:");
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let mut body = Vec::new();
                while l < lines.len() {
                    let next = lines[l];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    body.push(next.trim());
                    l += 1;
                }
                rule.1 = body.join("\n").trim().to_owned();
            } else {
                rule.1 = unquote(rest);
            }
        } else if trimmed == "annotations:" {
            in_annotations = Some(indent);
        } else if in_annotations.is_some() {
            let (key, value) = trimmed
                .split_once(':')
                .unwrap_or_else(|| panic!("annotation line {trimmed:?}"));
            let rule = rules.last_mut().expect("annotations before any - alert:");
            rule.2.insert(key.trim().to_owned(), unquote(value));
        }
    }
    rules
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_owned();
        }
    }
    s.to_owned()
}

/// The dashboard's queries: every panel target's `expr` (rows' nested
/// panels included) and every query variable's query, with where it is.
pub fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without an expr"));
                let ref_id = target["refId"].as_str().unwrap_or("?");
                out.push((format!("panel {title:?} {ref_id}"), expr.to_owned()));
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .expect("the dashboard has panels"),
        &mut out,
    );
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .expect("a query variable has a query");
            let name = variable["name"].as_str().unwrap_or("?");
            out.push((format!("variable ${name}"), query.to_owned()));
        }
    }
    out
}

/// The same query with Grafana's variables replaced so that Prometheus can
/// parse it: `$__rate_interval` and the other intervals by `1m`, and every
/// other variable (inside a matcher's string) by `.*`.
pub fn without_grafana_variables(query: &str) -> String {
    let mut out = query.to_owned();
    for interval in ["$__rate_interval", "$__interval", "$__range"] {
        out = out.replace(interval, "1m");
    }
    let mut result = String::new();
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            while chars
                .peek()
                .is_some_and(|&c| is_ident(c) || c == '{' || c == '}')
            {
                chars.next();
            }
            result.push_str(".*");
        } else {
            result.push(c);
        }
    }
    result
}

/// Every expression the alert rules and the dashboard hold.
pub fn references() -> Vec<Reference> {
    let alerts = std::fs::read_to_string(repo().join(ALERTS)).expect("the alert rules");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join(DASHBOARD)).expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut refs: Vec<Reference> = alert_rules(&alerts)
        .into_iter()
        .map(|(name, expr, _)| Reference {
            place: format!("alert {name}"),
            names: promql_names(&expr),
            expr,
        })
        .collect();
    for (place, query) in dashboard_queries(&dashboard) {
        // label_values(metric{…}, label): a selector and a label of it.
        let names = match query.strip_prefix("label_values(") {
            Some(args) => {
                let args = args.strip_suffix(')').expect("label_values(…)");
                let (selector, label) = args.rsplit_once(',').expect("label_values(m, label)");
                let mut names = promql_names(selector);
                names.grouping.push(label.trim().to_owned());
                names
            }
            None => promql_names(&query),
        };
        refs.push(Reference {
            place,
            expr: query,
            names,
        });
    }
    refs
}

/// What one scrape (Prometheus text) exports: metric → label → values.
#[derive(Debug, Default, Clone)]
pub struct Exported {
    pub series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exported {
    /// Reads the Prometheus text format (`# HELP`/`# TYPE` lines skipped).
    pub fn parse(text: &str) -> Self {
        let mut exported = Self::default();
        exported.add(text);
        exported
    }

    /// Adds another scrape's series.
    pub fn add(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let chars: Vec<char> = line.chars().collect();
            let end = chars
                .iter()
                .position(|&c| c == '{' || c == ' ')
                .unwrap_or_else(|| panic!("a sample without a value: {line}"));
            let metric: String = chars[..end].iter().collect();
            let labels = self.series.entry(metric).or_default();
            if chars[end] == '{' {
                let (matchers, _) = read_matchers(&chars, end, line);
                for m in matchers {
                    labels.entry(m.label).or_default().insert(m.value);
                }
            }
        }
    }
}

/// Why a metric cannot be exported by `store`'s errata, if it cannot: the
/// other test checks it. Prometheus's own `up` is no test's.
pub fn not_in(store: StoreKind, metric: &str) -> Option<&'static str> {
    const CQL_STORE: [&str; 6] = [
        "errata_buffer_",
        "errata_flush_",
        "errata_cql_",
        "errata_redis_",
        "errata_ownership_cache_",
        "errata_read_cache_",
    ];
    if metric == "up" {
        return Some("Prometheus's own series of every target");
    }
    match store {
        StoreKind::Embedded => {
            if CQL_STORE.iter().any(|p| metric.starts_with(p)) {
                Some("the cql store's (write-behind buffer, CQL, Redis, caches)")
            } else if metric.starts_with("errata_repair_") {
                Some("written by errata repair, which only the cql store needs")
            } else if metric == "errata_store_errors_total" {
                Some("needs a backend outage, which the cql test causes")
            } else {
                None
            }
        }
        StoreKind::Cql => metric
            .starts_with("errata_sqlite_")
            .then_some("the embedded store's single writer"),
    }
}

/// Why a label value cannot be seen on `store`'s errata in a test, if it
/// cannot: a 5xx status needs a backend outage, which only the cql test
/// causes (it cuts the CQL cluster off).
pub fn value_not_in(store: StoreKind, label: &str, value: &str) -> Option<&'static str> {
    (store == StoreKind::Embedded && label == "status" && value.starts_with('5'))
        .then_some("a 5xx needs a backend outage, which the cql test causes")
}

/// Every problem of `refs` against what `exported` holds, for `store`:
/// a metric, label or exact label value named but not exported. Also
/// returns what was left to the other store's test, by reason.
pub fn check(
    refs: &[Reference],
    exported: &Exported,
    store: StoreKind,
) -> (Vec<String>, BTreeMap<String, &'static str>) {
    let mut problems = Vec::new();
    let mut deferred = BTreeMap::new();
    for r in refs {
        let mut checked: Vec<&BTreeMap<String, BTreeSet<String>>> = Vec::new();
        let mut any_deferred = false;
        for s in &r.names.selectors {
            if s.metric.is_empty() {
                problems.push(format!(
                    "{}: a selector without a metric name: {}",
                    r.place, r.expr
                ));
                continue;
            }
            if let Some(why) = not_in(store, &s.metric) {
                deferred.insert(s.metric.clone(), why);
                any_deferred = true;
                continue;
            }
            let Some(labels) = exported.series.get(&s.metric) else {
                problems.push(format!("{}: metric {} is not exported", r.place, s.metric));
                continue;
            };
            checked.push(labels);
            for m in &s.matchers {
                if TARGET_LABELS.contains(&m.label.as_str()) {
                    continue;
                }
                let Some(values) = labels.get(&m.label) else {
                    problems.push(format!(
                        "{}: metric {} has no label {}",
                        r.place, s.metric, m.label
                    ));
                    continue;
                };
                for value in exact_values(m) {
                    if let Some(why) = value_not_in(store, &m.label, &value) {
                        deferred.insert(format!("{}{{{}=\"{value}\"}}", s.metric, m.label), why);
                    } else if !values.contains(&value) {
                        problems.push(format!(
                            "{}: metric {} never has {}=\"{value}\" (it has {values:?})",
                            r.place, s.metric, m.label
                        ));
                    }
                }
            }
        }
        for label in &r.names.grouping {
            // A label of a metric left to the other test is checked there.
            if TARGET_LABELS.contains(&label.as_str()) || any_deferred {
                continue;
            }
            if !checked.iter().any(|labels| labels.contains_key(label)) {
                problems.push(format!(
                    "{}: no metric of the expression has the label {label}",
                    r.place
                ));
            }
        }
    }
    (problems, deferred)
}

/// The values a matcher requires to exist: an `=` matcher's value, or each
/// alternative of an `=~` matcher that is a list of plain words
/// (`/a|/b`). Other regular expressions and negative matchers name none.
fn exact_values(m: &Matcher) -> Vec<String> {
    let plain = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-{}:".contains(c))
    };
    match m.op.as_str() {
        "=" if !m.value.is_empty() => vec![m.value.clone()],
        "=~" if m.value.split('|').all(plain) => m.value.split('|').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Runs `promtool` with these arguments in the repository: its output, or
/// a panic saying why (promtool comes with Debian's `prometheus` package,
/// which scripts/test installs).
pub fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool is needed (Debian's prometheus package; scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// How many rules promtool finds in a rules file ("SUCCESS: N rules found").
pub fn promtool_rule_count(path: &str) -> usize {
    let out = promtool(&["check", "rules", path]);
    out.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("SUCCESS: ")?
                .strip_suffix(" rules found")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no rule count in: {out}"))
}

/// The anchors of a Markdown file's headings, as GitHub makes them.
pub fn markdown_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Some of every kind of request a tutoring app makes, for `learners`
/// learners: sign-up, conversation, utterances, ingestions (some repeated,
/// so the caches are used), practice, frequencies, progress, and the
/// operations endpoints. Every answer must be a success.
pub async fn drive_traffic(api: &Api, learners: usize) -> Vec<Learner> {
    const ERRORS: [(&str, &str); 3] = [
        ("Grammar", "Subject-Verb Agreement"),
        ("Vocabulary", "Word Choice"),
        ("Fluency", "Filler Words"),
    ];
    let mut all = Vec::new();
    for n in 0..learners {
        let learner = api.learner().await;
        for round in 0..3 {
            let said = api.say(&learner, "She go to school every day.").await;
            let errors = &ERRORS[..1 + (n + round) % ERRORS.len()];
            expect_status(api.record(&said, errors).await, StatusCode::OK).await;
            // The same utterance again: known to the replica this time.
            expect_status(api.record(&said, &ERRORS[..1]).await, StatusCode::OK).await;
        }
        let user = learner.user_id;
        for path in [
            format!("/generate-exercise?user_id={user}&top_n=2&per_error=2"),
            format!("/generate-exercise?user_id={user}&top_n=2&per_error=2"),
            format!("/users/{user}/errors"),
            format!("/users/{user}/errors"),
            format!("/users/{user}/progress?weeks=4"),
        ] {
            expect_status(api.get(&path).await, StatusCode::OK).await;
        }
        all.push(learner);
    }
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        expect_status(api.get(path).await, StatusCode::OK).await;
    }
    all
}

/// One scrape of the replica's `/metrics`.
pub async fn scrape(api: &Api) -> String {
    let response = api.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("the metrics text")
}

/// Fails with every problem of the monitoring files against `exported`,
/// for `store`; says what it left to the other store's test.
pub fn assert_exported(exported: &Exported, store: StoreKind) {
    let refs = references();
    let (problems, deferred) = check(&refs, exported, store);
    for (metric, why) in &deferred {
        eprintln!("monitoring ({store:?}): {metric} not checked here: {why}");
    }
    assert!(
        problems.is_empty(),
        "the monitoring files name what errata ({store:?}) does not export:\n{}",
        problems.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape() -> Exported {
        Exported::parse(
            "# TYPE errata_http_requests_total counter\n\
             errata_http_requests_total{method=\"GET\",route=\"/users/{user_id}/errors\",status=\"200\"} 3\n\
             errata_http_requests_total{method=\"POST\",route=\"/simulate-and-generate\",status=\"503\"} 1\n\
             errata_flush_lag_seconds 0.2\n\
             errata_http_request_duration_seconds_bucket{method=\"GET\",route=\"/generate-exercise\",status=\"200\",le=\"0.1\"} 2\n",
        )
    }

    fn reference(expr: &str) -> Vec<Reference> {
        vec![Reference {
            place: "test".into(),
            expr: expr.into(),
            names: promql_names(expr),
        }]
    }

    #[test]
    fn reads_metrics_matchers_and_grouping_labels() {
        let names = promql_names(
            "histogram_quantile(0.99, sum by (route, le) (rate(errata_http_request_duration_seconds_bucket{job=~\"$job\", route=~\"/a|/b\"}[$__rate_interval]))) > 0.1\n\
             and on (job) # a comment naming not_a_metric\n\
             max without(instance) (errata_flush_lag_seconds offset 5m) unless up == bool 1",
        );
        let metrics: Vec<&str> = names.selectors.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(
            metrics,
            [
                "errata_http_request_duration_seconds_bucket",
                "errata_flush_lag_seconds",
                "up"
            ]
        );
        assert_eq!(names.grouping, ["route", "le", "job", "instance"]);
        assert_eq!(
            names.selectors[0].matchers[1],
            Matcher {
                label: "route".into(),
                op: "=~".into(),
                value: "/a|/b".into()
            }
        );
    }

    #[test]
    fn a_scrape_is_read_with_label_values_holding_braces() {
        let exported = scrape();
        let routes = &exported.series["errata_http_requests_total"]["route"];
        assert!(routes.contains("/users/{user_id}/errors"), "{routes:?}");
        assert!(exported.series["errata_flush_lag_seconds"].is_empty());
    }

    #[test]
    fn exported_names_pass() {
        let refs = reference(
            "sum by (route) (rate(errata_http_requests_total{status=~\"5..\", route=\"/simulate-and-generate\", job=~\"$job\"}[5m]))",
        );
        let (problems, _) = check(&refs, &scrape(), StoreKind::Embedded);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_wrong_metric_name_fails() {
        let refs = reference("rate(errata_http_request_total[5m])");
        let (problems, _) = check(&refs, &scrape(), StoreKind::Embedded);
        assert_eq!(
            problems,
            ["test: metric errata_http_request_total is not exported"]
        );
    }

    #[test]
    fn a_wrong_label_or_value_fails() {
        let refs = reference(
            "sum by (endpoint) (rate(errata_http_requests_total{code=\"500\", route=~\"/simulate-and-generate|/practice\", status=\"200\"}[5m]))",
        );
        let (problems, _) = check(&refs, &scrape(), StoreKind::Embedded);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("has no label code"));
        assert!(problems[1].contains("never has route=\"/practice\""));
        assert!(problems[2].contains("has the label endpoint"));
    }

    #[test]
    fn a_metric_of_the_other_store_is_deferred_not_passed() {
        let refs = reference("max(errata_buffer_pending_learners) > 0");
        let (problems, deferred) = check(&refs, &scrape(), StoreKind::Embedded);
        assert!(problems.is_empty());
        assert!(deferred.contains_key("errata_buffer_pending_learners"));
        let (problems, _) = check(&refs, &scrape(), StoreKind::Cql);
        assert_eq!(
            problems,
            ["test: metric errata_buffer_pending_learners is not exported"]
        );
    }

    #[test]
    fn every_metric_the_monitoring_files_name_is_checked_by_one_store_or_the_other() {
        let refs = references();
        assert!(refs.len() > 20, "too few expressions read: {}", refs.len());
        for r in &refs {
            assert!(
                !r.names.selectors.is_empty(),
                "{}: no metric read from {}",
                r.place,
                r.expr
            );
            for s in &r.names.selectors {
                for m in &s.matchers {
                    for value in exact_values(m) {
                        assert!(
                            value_not_in(StoreKind::Cql, &m.label, &value).is_none(),
                            "{}: {}=\"{value}\" is checked by neither store's test",
                            r.place,
                            m.label
                        );
                    }
                }
                let both = not_in(StoreKind::Embedded, &s.metric).is_some()
                    && not_in(StoreKind::Cql, &s.metric).is_some();
                assert!(
                    !both || s.metric == "up",
                    "{}: {} is checked by neither store's test",
                    r.place,
                    s.metric
                );
            }
        }
    }

    #[test]
    fn every_alert_rule_is_read() {
        let yaml = std::fs::read_to_string(repo().join(ALERTS)).unwrap();
        let rules = alert_rules(&yaml);
        let listed = yaml.matches("- alert:").count();
        assert_eq!(rules.len(), listed);
        for (name, expr, annotations) in &rules {
            assert!(!expr.is_empty(), "{name}: no expression read");
            for key in ["summary", "description", "runbook_url"] {
                assert!(annotations.contains_key(key), "{name}: no {key}");
            }
        }
    }

    #[test]
    fn grafana_variables_are_replaced_for_prometheus() {
        assert_eq!(
            without_grafana_variables(
                "rate(x{job=~\"$job\", instance=~\"${instance}\"}[$__rate_interval])"
            ),
            "rate(x{job=~\".*\", instance=~\".*\"}[1m])"
        );
    }

    #[test]
    fn anchors_are_made_as_github_makes_them() {
        let anchors = markdown_anchors("## Alerts and runbooks\n#### ErrataFlushLagHigh\n");
        assert!(anchors.contains("alerts-and-runbooks"));
        assert!(anchors.contains("errataflushlaghigh"));
    }
}

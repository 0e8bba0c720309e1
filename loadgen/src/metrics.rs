//! What the server says a phase cost: its `/metrics` counters before and
//! after the phase, summed over every replica, turned into figures per
//! request.

use std::collections::BTreeMap;

use serde::Serialize;

/// Every sample of the Prometheus text of all replicas, summed by series
/// (`name{labels}`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, f64>);

pub async fn scrape(client: &reqwest::Client, bases: &[String]) -> anyhow::Result<Snapshot> {
    let mut samples = BTreeMap::new();
    for base in bases {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        for (series, value) in parse(&text) {
            *samples.entry(series).or_insert(0.0) += value;
        }
    }
    Ok(Snapshot(samples))
}

fn parse(text: &str) -> impl Iterator<Item = (String, f64)> + '_ {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.trim().to_owned(), value.parse().ok()?))
        })
}

impl Snapshot {
    /// What grew between `self` (before) and `after`.
    pub fn delta(&self, after: &Snapshot) -> Snapshot {
        Snapshot(
            after
                .0
                .iter()
                .map(|(series, value)| {
                    let before = self.0.get(series).copied().unwrap_or(0.0);
                    (series.clone(), value - before)
                })
                .collect(),
        )
    }

    /// The value of each series of metric `name`, by its `label`.
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let prefix = format!("{name}{{");
        let key = format!("{label}=\"");
        self.0
            .iter()
            .filter_map(|(series, value)| {
                let labels = series.strip_prefix(&prefix)?;
                let start = labels.find(&key)? + key.len();
                let end = labels[start..].find('"')? + start;
                Some((labels[start..end].to_owned(), *value))
            })
            .collect()
    }

    /// The sum of every series of metric `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter(|(series, _)| series.as_str() == name || series.starts_with(&prefix))
            .map(|(_, value)| value)
            .sum()
    }

    /// The value of one series, if any replica has it.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The `q` quantile of histogram `name`, as the upper bound of the
    /// bucket it falls in (None without samples).
    fn quantile(&self, name: &str, q: f64) -> Option<f64> {
        let count = self.value(&format!("{name}_count"));
        if count <= 0.0 {
            return None;
        }
        let mut buckets: Vec<(f64, f64)> = self
            .by_label(&format!("{name}_bucket"), "le")
            .into_iter()
            .filter_map(|(le, n)| Some((le.parse::<f64>().ok()?, n)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
            .iter()
            .find(|(_, n)| *n >= q * count)
            .map(|(le, _)| *le)
    }
}

/// What one phase cost the server, per request (all endpoints together;
/// an ingest-only or practice-only phase gives one endpoint's figures).
#[derive(Debug, Clone, Serialize)]
pub struct Costs {
    pub requests: f64,
    pub cql_statements_per_request: BTreeMap<String, f64>,
    pub cql_round_trips_per_request: f64,
    pub redis_calls_per_request: BTreeMap<String, f64>,
    pub redis_round_trips_per_request: f64,
    pub error_points: f64,
    /// Counter updates (statements inside counter batches) per 1,000 error
    /// points recorded.
    pub counter_statements_per_1000_points: Option<f64>,
    pub counter_batches: f64,
    /// p99 of how long deltas waited in Redis before a flusher took them
    /// (upper bound of its histogram bucket), seconds.
    pub flush_lag_p99_seconds: Option<f64>,
    /// The share of reads a replica served from its memory of the
    /// learner's durable rows (cql mode), when any read was made.
    pub read_cache_hit_ratio: Option<f64>,
}

impl Costs {
    pub fn of(delta: &Snapshot, requests: f64) -> Self {
        let per = |n: f64| if requests > 0.0 { n / requests } else { 0.0 };
        let per_kind = |name: &str, label: &str| {
            delta
                .by_label(name, label)
                .into_iter()
                .filter(|(_, n)| *n > 0.0)
                .map(|(kind, n)| (kind, per(n)))
                .collect::<BTreeMap<_, _>>()
        };
        let points = delta.value("errata_error_points_recorded_total");
        let counter_statements = delta.value("errata_flush_batch_size_sum");
        let redis = per_kind("errata_redis_calls_total", "call");
        Self {
            requests,
            cql_statements_per_request: per_kind("errata_cql_statements_total", "kind"),
            cql_round_trips_per_request: per(delta
                .by_label("errata_cql_round_trips_total", "kind")
                .values()
                .sum()),
            redis_round_trips_per_request: redis.values().sum(),
            redis_calls_per_request: redis,
            error_points: points,
            counter_statements_per_1000_points: (points > 0.0)
                .then(|| 1000.0 * counter_statements / points),
            counter_batches: delta.value("errata_flush_batches_total"),
            flush_lag_p99_seconds: delta.quantile("errata_flush_lag_distribution_seconds", 0.99),
            read_cache_hit_ratio: {
                let reads = delta.by_label("errata_read_cache_total", "result");
                let hits = reads.get("hit").copied().unwrap_or(0.0);
                let all: f64 = reads.values().sum();
                (all > 0.0).then(|| hits / all)
            },
        }
    }

    pub fn print(&self) {
        let fmt = |m: &BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  per request: CQL round trips {:.2} ({}); Redis round trips {:.2} ({})",
            self.cql_round_trips_per_request,
            fmt(&self.cql_statements_per_request),
            self.redis_round_trips_per_request,
            fmt(&self.redis_calls_per_request)
        );
        if let Some(ratio) = self.read_cache_hit_ratio {
            println!(
                "  reads served from the replica's memory: {:.0}%",
                100.0 * ratio
            );
        }
        if let Some(per_1000) = self.counter_statements_per_1000_points {
            println!(
                "  counter statements per 1,000 error points: {per_1000:.0} ({} batches); flush lag p99: {}",
                self.counter_batches,
                self.flush_lag_p99_seconds
                    .map_or_else(|| "-".into(), |s| format!("≤ {s} s"))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_sum_replicas_and_read_labels_and_buckets() {
        let before = Snapshot(parse("errata_redis_calls_total{call=\"commit\"} 10\n").collect());
        let mut after = Snapshot::default();
        let text = "# TYPE x counter\n\
            errata_redis_calls_total{call=\"commit\"} 30\n\
            errata_redis_calls_total{call=\"lease\"} 20\n\
            errata_flush_lag_distribution_seconds_bucket{le=\"0.5\"} 90\n\
            errata_flush_lag_distribution_seconds_bucket{le=\"1\"} 99\n\
            errata_flush_lag_distribution_seconds_bucket{le=\"+Inf\"} 100\n\
            errata_flush_lag_distribution_seconds_count 100\n";
        for (series, value) in parse(text) {
            *after.0.entry(series).or_insert(0.0) += value;
        }
        let costs = Costs::of(&before.delta(&after), 10.0);
        assert_eq!(costs.redis_calls_per_request["commit"], 2.0);
        assert_eq!(costs.redis_round_trips_per_request, 4.0);
        assert_eq!(costs.flush_lag_p99_seconds, Some(1.0));
    }
}

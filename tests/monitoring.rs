//! The monitoring files checked against Prometheus's own tools and against
//! a real errata (embedded store): the alert rules pass `promtool check
//! rules` and their unit tests (`promtool test rules`), every alert links
//! to its runbook in docs/operations.md, the dashboard's queries parse as
//! PromQL, and every metric, label and label value the rules and the
//! dashboard name is exported by a real `errata serve` under traffic. The
//! cql store's metrics are checked by tests/cql_monitoring.rs.

use errata::config::StoreKind;
use errata_testkit::monitoring::{
    self, alert_rules, assert_exported, dashboard_queries, markdown_anchors, promtool,
    promtool_rule_count, repo, without_grafana_variables, Exported, ALERTS, ALERTS_TEST, DASHBOARD,
    OPERATIONS,
};
use errata_testkit::{test_config, Api, Errata};
use serde_json::Value;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn promtool_accepts_the_rules_and_the_compose_prometheus_configuration() {
    let rules = alert_rules(&read(ALERTS));
    assert_eq!(promtool_rule_count(ALERTS), rules.len());
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
}

#[test]
fn every_alert_fires_and_stays_silent_in_the_promtool_unit_tests() {
    let out = promtool(&["test", "rules", ALERTS_TEST]);
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = read(ALERTS_TEST);
    for (name, _, _) in alert_rules(&read(ALERTS)) {
        let evaluations: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|e| e.contains(&format!("alertname: {name}\n")))
            .collect();
        assert!(
            evaluations.iter().any(|e| e.contains("- exp_labels:")),
            "{name}: no unit test where it fires"
        );
        assert!(
            evaluations.iter().any(|e| e.contains("exp_alerts: []")),
            "{name}: no unit test where it stays silent"
        );
    }
}

#[test]
fn every_alert_links_to_its_runbook_in_the_operations_guide() {
    let guide = read(OPERATIONS);
    let anchors = markdown_anchors(&guide);
    for (name, _, annotations) in alert_rules(&read(ALERTS)) {
        let url = &annotations["runbook_url"];
        let anchor = url
            .strip_prefix(&format!("{OPERATIONS}#"))
            .unwrap_or_else(|| {
                panic!("{name}: runbook_url {url} is not a section of {OPERATIONS}")
            });
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook_url {url}");
        assert!(
            anchors.contains(anchor),
            "{name}: {OPERATIONS} has no section #{anchor}"
        );
        // The section says what to check and what to do.
        let section = guide
            .split_once(&format!("#### {name}\n"))
            .map(|(_, rest)| rest.split("\n#").next().unwrap_or(rest))
            .unwrap_or_else(|| panic!("{OPERATIONS}: no #### {name} heading"));
        for part in ["**Check**", "**Do**"] {
            assert!(section.contains(part), "{name}'s runbook says no {part}");
        }
    }
}

#[test]
fn the_dashboard_is_a_current_grafana_dashboard_whose_queries_parse() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    assert_eq!(dashboard["uid"], "errata");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for variable in ["datasource", "job", "instance"] {
        assert!(variables.contains(&variable), "no ${variable} variable");
    }
    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for row in [
        "Traffic",
        "buffer",
        "Cassandra and Redis",
        "Caches",
        "Process",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(row)),
            "no {row} row in {rows:?}"
        );
    }
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id reused"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0, "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("job=~\"$job\"") && expr.contains("instance=~\"$instance\""),
                "{title}: {expr} ignores the job/instance variables"
            );
        }
    }

    // Prometheus's own parser on every query: as recording rules, which
    // promtool parses and checks.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let queries = dashboard_queries(&dashboard);
    let mut parsed = 0;
    for (n, (_, query)) in queries.iter().enumerate() {
        if query.starts_with("label_values(") {
            continue;
        }
        let expr = without_grafana_variables(query);
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
        parsed += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard_rules.yml");
    std::fs::write(&path, rules).unwrap();
    let out = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(
        out.contains(&format!("SUCCESS: {parsed} rules found")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_errata_on_the_embedded_store_exports_what_the_rules_and_the_dashboard_name() {
    let data = tempfile::tempdir().expect("a data folder");
    let replica = ERRATA.serve(&test_config(data.path()));
    let api = Api::new(replica.url(""));
    monitoring::drive_traffic(&api, 3).await;
    let exported = Exported::parse(&monitoring::scrape(&api).await);
    assert_exported(&exported, StoreKind::Embedded);
    replica.terminate();
}

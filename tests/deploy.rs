//! The deployment files are checked here, as far as a machine without a
//! container engine can: docker-compose validates the compose file itself.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose(args: &[&str]) -> String {
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("docker-compose is needed to check docker-compose.yml (scripts/test installs it)");
    assert!(
        output.status.success(),
        "docker-compose {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_compose_file_is_valid() {
    compose(&["config", "-q"]);
}

#[test]
fn the_compose_file_runs_three_replicas_behind_a_load_balancer() {
    let services = compose(&["config", "--services"]);
    let services: Vec<&str> = services.lines().collect();
    for expected in [
        "scylla", "redis", "migrate", "errata-1", "errata-2", "errata-3", "lb",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} missing from {services:?}"
        );
    }
    let resolved = compose(&["config"]);
    assert!(
        resolved.contains("--appendonly"),
        "Redis must keep an append-only file"
    );
    assert!(resolved.contains("published: 8000") || resolved.contains("8000:8000"));
    // Every long-running service has a health check; the one-shot migration
    // is waited for by completion instead.
    assert_eq!(resolved.matches("healthcheck:").count(), services.len());
    assert!(resolved.contains("service_completed_successfully"));

    let nginx = std::fs::read_to_string(repo().join("deploy/nginx.conf")).unwrap();
    for replica in ["errata-1:8000", "errata-2:8000", "errata-3:8000"] {
        assert!(
            nginx.contains(replica),
            "nginx does not balance over {replica}"
        );
    }
}

#[test]
fn the_runtime_image_is_small_and_runs_as_a_non_root_user() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").collect();
    assert!(stages.len() >= 3, "expected a multi-stage build");
    let runtime = stages.last().unwrap();
    assert!(
        runtime.starts_with("debian:bookworm-slim"),
        "runtime base: {runtime}"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets a USER");
    assert_ne!(user.trim(), "root");
    assert!(runtime.contains("useradd --system"));
}

#[test]
fn the_monitoring_profile_adds_prometheus_with_the_rules_and_grafana_with_the_dashboard() {
    let resolved = compose(&["--profile", "monitoring", "config"]);
    let services = compose(&["--profile", "monitoring", "config", "--services"]);
    for expected in ["prometheus", "grafana", "repair-metrics"] {
        assert!(
            services.lines().any(|s| s == expected),
            "{expected} missing"
        );
    }
    // Opt-in: each monitoring service belongs to the profile.
    let compose_file = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    assert_eq!(
        compose_file.matches("profiles: [\"monitoring\"]").count(),
        3
    );
    for mounted in [
        "deploy/prometheus",
        "deploy/grafana/provisioning",
        "deploy/grafana/errata.json",
    ] {
        assert!(resolved.contains(mounted), "{mounted} is not mounted");
        assert!(repo().join(mounted).exists(), "{mounted} does not exist");
    }
    let prometheus =
        std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    assert!(prometheus.contains("alerts.yml"));
    for replica in ["errata-1:8000", "errata-2:8000", "errata-3:8000"] {
        assert!(prometheus.contains(replica), "{replica} is not scraped");
    }
    let datasource = std::fs::read_to_string(
        repo().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    assert!(datasource.contains("http://prometheus:9090"));
    // The replicas and the repair share the volume the collector reads.
    assert!(resolved.contains("ERRATA_REPAIR_METRICS_FILE"));
}

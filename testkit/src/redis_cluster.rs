//! A real Redis Cluster for the tests: three `redis-server` masters on free
//! loopback ports, joined by `redis-cli --cluster create`, killed when
//! dropped.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Each node's cluster id, in the order of `nodes`.
    ids: Vec<String>,
}

fn redis_cli<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let output = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli runs (scripts/test installs redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

impl RedisCluster {
    /// Three masters, no replicas, every slot assigned; returns once every
    /// node reports the cluster ok.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        redis_cli(&args);
        let mut cluster = Self {
            nodes,
            ids: Vec::new(),
        };
        cluster.ids = (0..cluster.nodes.len())
            .map(|node| cluster.cli(node, &["cluster", "myid"]).trim().to_owned())
            .collect();
        cluster.wait_ok();
        cluster
    }

    /// The comma-separated list errata takes as `ERRATA_REDIS_URL`.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis-cli` against one node (not a terminal: answers print raw,
    /// one value per line).
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        let mut all = vec!["-p".to_owned(), self.nodes[node].port.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        redis_cli(&all)
    }

    /// Until every node agrees the cluster is ok and knows all three.
    pub fn wait_ok(&self) {
        let started = Instant::now();
        loop {
            let ok = (0..self.nodes.len()).all(|node| {
                let info = self.cli(node, &["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            });
            if ok {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the redis cluster did not become ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn node_id(&self, node: usize) -> &str {
        &self.ids[node]
    }

    /// The master (index into `nodes`) that serves `slot` now.
    pub fn owner(&self, slot: u16) -> usize {
        let table = self.cli(0, &["cluster", "nodes"]);
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-');
                match (
                    ends.next().map(str::parse::<u16>),
                    ends.next().map(str::parse::<u16>),
                ) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            if serves {
                return self
                    .ids
                    .iter()
                    .position(|id| id == fields[0])
                    .expect("a node of this cluster");
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Moves one slot and its keys to master `to`, as `redis-cli --cluster
    /// reshard` does it: the slot is set importing on the target and
    /// migrating on the source, its keys are `MIGRATE`d in batches while
    /// clients keep writing (they are redirected with `ASK`, or told
    /// `TRYAGAIN` for a command whose keys are split between the two), then
    /// every master is told the new owner. Returns how many keys moved.
    pub fn move_slot(&self, slot: u16, to: usize) -> usize {
        let from = self.owner(slot);
        if from == to {
            return 0;
        }
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_text = slot.to_string();
        let ok = |answer: String| assert_eq!(answer.trim(), "OK", "CLUSTER SETSLOT {slot}");
        ok(self.cli(
            to,
            &["cluster", "setslot", &slot_text, "importing", from_id],
        ));
        ok(self.cli(
            from,
            &["cluster", "setslot", &slot_text, "migrating", to_id],
        ));
        let to_port = self.nodes[to].port.to_string();
        let mut moved = 0;
        loop {
            let keys = self.cli(from, &["cluster", "getkeysinslot", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            moved += keys.len();
            let mut migrate = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys);
            let answer = self.cli(from, &migrate);
            assert!(answer.trim() == "OK", "MIGRATE answered {answer}");
        }
        for node in 0..self.nodes.len() {
            ok(self.cli(node, &["cluster", "setslot", &slot_text, "node", to_id]));
        }
        moved
    }
}

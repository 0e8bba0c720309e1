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
        Self::start_with(0)
    }

    /// Three masters with one replica each; returns once every node reports
    /// the cluster ok and every master has its replica online.
    pub fn start_with_replicas() -> Self {
        let cluster = Self::start_with(1);
        for master in cluster.masters() {
            cluster.nodes[master].wait_for_replicas(1);
        }
        cluster
    }

    fn start_with(replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| RedisServer::start_cluster_node())
            .collect();
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas".to_owned(), replicas.to_string()]);
        args.push("--cluster-yes".to_owned());
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

    /// Until every running node agrees the cluster is ok and knows them
    /// all.
    pub fn wait_ok(&self) {
        let started = Instant::now();
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let ok = self.running().all(|node| {
                let info = self.cli(node, &["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains(&known)
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

    /// The nodes whose process runs.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&node| self.nodes[node].is_running())
    }

    /// `CLUSTER NODES` as the first running node sees it.
    fn table(&self) -> String {
        let node = self.running().next().expect("a running node");
        self.cli(node, &["cluster", "nodes"])
    }

    /// The masters that serve slots now (indexes into `nodes`).
    pub fn masters(&self) -> Vec<usize> {
        self.table()
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let master = fields.get(2)?.split(',').any(|f| f == "master");
                let serves = fields.len() > 8;
                let failed = fields.get(2)?.contains("fail");
                (master && serves && !failed)
                    .then(|| self.ids.iter().position(|id| id == fields[0]))?
            })
            .collect()
    }

    /// The replica (index into `nodes`) of `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let id = self.node_id(master);
        self.table()
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let replica = fields.get(2)?.split(',').any(|f| f == "slave");
                (replica && fields.get(3) == Some(&id))
                    .then(|| self.ids.iter().position(|i| i == fields[0]))?
            })
            .unwrap_or_else(|| panic!("master {master} has no replica"))
    }

    /// A failover: master `master` is SIGKILLed and its replica takes its
    /// slots over (`CLUSTER FAILOVER TAKEOVER`, as an operator forces it,
    /// without the other masters' vote); returns the new master once every
    /// running node sees the cluster ok again.
    pub fn fail_over(&mut self, master: usize) -> usize {
        let replica = self.replica_of(master);
        self.nodes[master].kill();
        let answer = self.cli(replica, &["cluster", "failover", "takeover"]);
        assert_eq!(answer.trim(), "OK", "CLUSTER FAILOVER TAKEOVER");
        let started = Instant::now();
        while !self.masters().contains(&replica) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "replica {replica} did not take over"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_ok();
        replica
    }

    /// Starts a killed node again: it finds its slots taken over and
    /// rejoins as a replica of `master`; returns once `master` has it
    /// online.
    pub fn rejoin(&mut self, node: usize, master: usize) {
        self.nodes[node].restart();
        self.nodes[master].wait_for_replicas(1);
        self.wait_ok();
    }

    /// The master (index into `nodes`) that serves `slot` now.
    pub fn owner(&self, slot: u16) -> usize {
        let table = self.table();
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

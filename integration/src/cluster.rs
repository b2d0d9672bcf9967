//! A 3-node OpenBao raft cluster on loopback, as production runs one: every node with its own
//! plugin directory holding the same mayfly binary (the catalog and its SHA-256 are shared),
//! mayfly registered and mounted at `mayfly/`. Nodes can be stopped, killed, frozen, restarted
//! and asked to step down; the tests find the active node by `sys/health`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Bao;

/// How many nodes a cluster has: the smallest that survives the loss of one.
pub const NODES: usize = 3;

/// A read every mount of mayfly answers with 200, whatever its configuration.
pub const SERVED: &str = "mayfly/policies-schema";

pub struct Cluster {
    pub nodes: Vec<Bao>,
}

/// How the cluster's servers are configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `disable_standby_reads = true`: standbys load no mounts and forward every request.
    pub disable_standby_reads: bool,
}

impl Cluster {
    /// Starts a cluster with mayfly mounted at `mayfly/`; node 0 is active.
    pub fn start(options: Options) -> Cluster {
        let extra = if options.disable_standby_reads {
            "disable_standby_reads = true\nlog_format = \"json\"\n"
        } else {
            "log_format = \"json\"\n"
        };
        let mut nodes: Vec<Bao> = (0..NODES)
            .map(|i| Bao::raft_node(&format!("node-{i}"), extra))
            .collect();
        nodes[0].initialize_cluster();
        let (first, rest) = nodes.split_at_mut(1);
        for node in rest {
            node.join(&first[0]);
        }
        let cluster = Cluster { nodes };
        let leader = cluster.active();
        // A node joins as a non-voter and is promoted once stable (autopilot, about 10 s):
        // until then the loss of the leader leaves no quorum to elect another.
        let voters = crate::wait_until(60.0, || cluster.voters(leader) == NODES);
        assert!(
            voters,
            "not every node became a voter; logs:\n{}",
            cluster.logs()
        );
        cluster.nodes[leader].register();
        cluster.nodes[leader].enable("mayfly");
        if !options.disable_standby_reads {
            // Standbys learn of the new mount from the active node and start its plugin.
            for node in &cluster.nodes {
                let up = crate::wait_until(30.0, || node.get(SERVED).0 == 200);
                assert!(
                    up,
                    "{} does not serve mayfly/; log:\n{}",
                    node.addr,
                    node.log()
                );
            }
        }
        cluster
    }

    /// The index of the active node, waiting up to 60 s for one.
    pub fn active(&self) -> usize {
        self.wait_for_active(None, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no active node; logs:\n{}", self.logs()))
    }

    /// Waits up to `within` for a node other than `except` to be active; its index.
    pub fn wait_for_active(&self, except: Option<usize>, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            let found = (0..self.nodes.len())
                .filter(|i| Some(*i) != except)
                .find(|i| self.nodes[*i].health() == 200);
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many voters the raft configuration has, as node `via` reads it.
    pub fn voters(&self, via: usize) -> usize {
        let (_, body) = self.nodes[via].get("sys/storage/raft/configuration");
        body["data"]["config"]["servers"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["voter"] == true).count())
    }

    /// The indices of the nodes that are up and not active.
    pub fn standbys(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| matches!(self.nodes[*i].health(), 429 | 473))
            .collect()
    }

    /// `sys/step-down` on the active node; returns the index of the node that takes over.
    pub fn step_down(&self) -> usize {
        let old = self.active();
        let (status, body) = self.nodes[old].put("sys/step-down", Value::Null);
        assert!(status < 300, "step-down: {status} {body}");
        self.wait_for_active(Some(old), Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no node took over; logs:\n{}", self.logs()))
    }

    /// Every node's log, headed by its index, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("==== node {i} ({})\n{}", n.addr, n.log()))
            .collect()
    }

    /// mayfly's audit events in node `i`'s log.
    pub fn audit_events(&self, i: usize) -> Vec<Value> {
        self.nodes[i].audit_events()
    }

    /// The (node_role, replication_state) each mayfly mount reported at Initialize on node
    /// `i`, in order.
    pub fn initialized_roles(&self, i: usize) -> Vec<(String, i64)> {
        self.nodes[i]
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["@message"] == "initialized" && v.get("node_role").is_some())
            .map(|v| {
                let role = v["node_role"].as_str().unwrap_or("").to_owned();
                // The host logs the plugin's fields as text.
                let state = v["replication_state"].as_str().and_then(|s| s.parse().ok());
                (role, state.unwrap_or(-1))
            })
            .collect()
    }

    /// The lines of node `i`'s log that say a storage write was refused as read-only, or
    /// that mayfly logged as errors.
    pub fn readonly_failures(&self, i: usize) -> Vec<String> {
        self.nodes[i]
            .log()
            .lines()
            .filter(|l| l.contains("mayfly"))
            .filter(|l| {
                l.contains("cannot write to readonly storage") || l.contains(r#""@level":"error""#)
            })
            .map(str::to_owned)
            .collect()
    }
}

//! The node a mount runs on, and the work it has in flight.
//!
//! In a raft cluster every node runs the plugin, but only the active node acts: the scheduler,
//! task deadlines, rotations and every call to a target run there. A standby serves reads from
//! its copy of storage and answers anything else with an error the host forwards to the active
//! node ([`Error::Forward`]), before any side effect. The host tears a mount down and builds
//! it again on every change of role (Cleanup, then Setup and Initialize), so the role is
//! decided once, when the mount starts.
//!
//! Cleanup stops the mount: the background work (the scheduler and what it started) is
//! aborted and requests still running are cancelled, and it returns only once all of it has
//! stopped, so no target call of the mount outlives it. What was cut short is in the ledger
//! and is picked up by whichever node acts next.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::contract::error::Error;
use crate::contract::request::Operation;

/// What this node's mount may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Acts: issues, revokes, rotates; runs the scheduler.
    Active,
    /// Serves reads; forwards everything else to the active node.
    Standby,
}

impl NodeRole {
    /// The role the host's replication state says: a standby when the performance-standby
    /// bit (`1 << 14`, as OpenBao's own database engine tests it) is set. Whole values are
    /// never compared: OpenBao reports 8224 on an active node, 24576 on a standby that serves
    /// reads and 12288 on a single node or dev server, and other bits may join them.
    pub fn from_replication_state(state: i32) -> NodeRole {
        const PERFORMANCE_STANDBY: i32 = 1 << 14;
        if state & PERFORMANCE_STANDBY != 0 {
            NodeRole::Standby
        } else {
            NodeRole::Active
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Active => "active",
            NodeRole::Standby => "standby",
        }
    }
}

/// The mount's role and its work in flight.
pub struct Node {
    standby: AtomicBool,
    /// Turns true when the mount stops; running requests are cancelled by it.
    stop: watch::Sender<bool>,
    /// The scheduler's loop and the tasks it started; `None` once stopped.
    background: Mutex<Option<JoinSet<()>>>,
    /// Requests being handled, and a signal when the last one ends.
    requests: AtomicUsize,
    idle: Notify,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            standby: AtomicBool::new(false),
            stop: watch::channel(false).0,
            background: Mutex::new(Some(JoinSet::new())),
            requests: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

impl Node {
    pub fn set_role(&self, role: NodeRole) {
        self.standby
            .store(role == NodeRole::Standby, Ordering::SeqCst);
    }

    pub fn role(&self) -> NodeRole {
        if self.standby.load(Ordering::SeqCst) {
            NodeRole::Standby
        } else {
            NodeRole::Active
        }
    }

    /// Whether the mount has been stopped (Cleanup).
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// The error for a request (`op` on `path`) this node may not act on, if it may not: it is
    /// a standby, or the mount is stopping.
    pub fn refuse(&self, op: Operation, path: &str) -> Option<Error> {
        let why = if self.stopped() {
            "mayfly's mount is stopping on this node"
        } else if self.role() == NodeRole::Standby {
            "this node is a standby and mayfly acts only on the active node"
        } else {
            return None;
        };
        Some(Error::Forward(format!("{why} ({} {path})", op.name())))
    }

    /// Runs `work` in the background until it ends or the mount stops.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut background = self.background.lock().unwrap();
        let Some(set) = background.as_mut() else {
            return;
        };
        // Reap what has finished, so a long-lived mount does not keep every task's result.
        while set.try_join_next().is_some() {}
        set.spawn(work);
    }

    /// Runs a request (`op` on `path`): cancelled, with [`Error::Forward`], if the mount stops
    /// meanwhile.
    pub async fn request<T>(
        &self,
        op: Operation,
        path: &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let _done = RequestDone(self);
        let mut stop = self.stop.subscribe();
        if *stop.borrow_and_update() {
            return Err(self.refuse(op, path).expect("stopped"));
        }
        tokio::select! {
            result = work => result,
            _ = stop.changed() => Err(Error::Forward(format!(
                "mayfly's mount stopped on this node while the request ran ({} {path})",
                op.name()
            ))),
        }
    }

    /// Stops the mount: aborts the background work, cancels running requests, and returns
    /// once all of them have ended. Idempotent (the host may send Cleanup twice).
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let background = self.background.lock().unwrap().take();
        if let Some(mut set) = background {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        loop {
            let idle = self.idle.notified();
            if self.requests.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Counts a request out when it ends, however it ends.
struct RequestDone<'a>(&'a Node);

impl Drop for RequestDone<'_> {
    fn drop(&mut self) {
        if self.0.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

//! Process lifecycle: signals, stdout after the handshake, and the watchdogs that make sure no
//! mayfly process outlives its host (the host leaks plugins whose start-up failed half-way, and
//! nothing tells a plugin that the host was killed).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long a started process waits for its first Setup before it concludes the host gave up;
/// `MAYFLY_SETUP_TIMEOUT` (seconds) overrides it.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// How often the parent is checked for.
const PARENT_POLL: Duration = Duration::from_secs(1);
/// The pause between answering Shutdown and exiting, so the reply reaches the host.
const EXIT_GRACE: Duration = Duration::from_millis(50);

pub const STARTED_BY_HAND: &str = "\
This is mayfly, a secrets-engine plugin for OpenBao and HashiCorp Vault; it is started by the
server, not by hand. To use it, copy the binary into the server's plugin directory, then:

    bao plugin register -sha256=$(sha256sum mayfly | cut -d' ' -f1) secret mayfly
    bao secrets enable -path=mayfly mayfly

(`vault` takes the same commands.) `mayfly --version` prints the version.";

/// The host does not give the plugin a process group of its own, so a Ctrl-C in the host's
/// terminal reaches us too; the host alone decides when we stop.
pub fn ignore_sigint() {
    // SAFETY: installing SIG_IGN for SIGINT before any thread starts has no other effect.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// After the handshake line nothing may reach stdout: the host discards it, and a long line can
/// stall its reader. Point fd 1 at /dev/null so no library can write there by accident.
pub fn silence_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 1 with a valid open descriptor.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Exits shortly, from a task, so the caller can still answer the host.
pub fn exit_soon() {
    tokio::spawn(async {
        tokio::time::sleep(EXIT_GRACE).await;
        std::process::exit(0);
    });
}

/// Exits if no Setup arrives in time: the host failed to finish starting us and forgot us.
pub fn watch_startup(setup_seen: Arc<Notify>) {
    let deadline = std::env::var("MAYFLY_SETUP_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(SETUP_DEADLINE, Duration::from_secs);
    tokio::spawn(async move {
        if tokio::time::timeout(deadline, setup_seen.notified())
            .await
            .is_err()
        {
            tracing::error!(
                waited_s = deadline.as_secs(),
                "no Setup from the host; exiting"
            );
            std::process::exit(1);
        }
    });
}

/// Exits when the host process is gone (we are re-parented). Polling getppid is used rather
/// than PR_SET_PDEATHSIG, which fires when the spawning *thread* exits, not the process.
pub fn watch_parent() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PARENT_POLL).await;
            // SAFETY: as above.
            if unsafe { libc::getppid() } != parent {
                tracing::warn!(parent, "the host process is gone; exiting");
                std::process::exit(0);
            }
        }
    });
}

/// SIGTERM (from an operator or a service manager) ends the process cleanly.
pub fn exit_on_sigterm() {
    tokio::spawn(async {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            tracing::info!("SIGTERM received; exiting");
            std::process::exit(0);
        }
    });
}

/// For crash-safety tests only: `MAYFLY_TEST_CRASH_AT=<point>` makes the process SIGKILL itself
/// at that named step (of issuance, rotate-root or a static rotation; see the README), as a power
/// cut would. Unset (as in every real deployment) it does nothing.
pub fn crash_hook() -> Option<mayfly::CrashHook> {
    let at = std::env::var("MAYFLY_TEST_CRASH_AT").ok()?;
    tracing::warn!(at = %at, "MAYFLY_TEST_CRASH_AT is set: this process will kill itself while issuing");
    Some(std::sync::Arc::new(move |point: &'static str| {
        if point == at {
            tracing::warn!(point, "crash point reached; killing this process");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }))
}

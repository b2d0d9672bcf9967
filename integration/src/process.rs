//! Finding and stopping processes by their executable, through /proc.

use std::path::Path;

/// Live processes whose executable is `exe` (zombies excluded).
pub fn pids_of(exe: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        if target == exe && !is_zombie(pid) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Signals a whole process group.
pub fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: as above; a negative pid addresses the group.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

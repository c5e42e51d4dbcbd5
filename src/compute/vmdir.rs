//! The files of one VM on its node, shared by every driver: `events.log` (one line per
//! lifecycle event: `<unix ms> <kind> <words>`, kinds `start`, `reset`, `shutdown`, `panic`)
//! and a pid file checked against the process's command line.

use std::io::Write;
use std::path::Path;

use crate::ids::VmId;

/// The marker every VM process carries in its command line.
pub fn marker(id: &VmId) -> String {
    format!("strata-vm-{}", id.0)
}

/// The pid in `pid_file` if that process runs and is this VM's (a zombie is not).
pub fn live_pid(pid_file: &Path, id: &VmId) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains(&marker(id))
        .then_some(pid)
}

pub fn append_event(dir: &Path, what: &str) {
    if let Ok(f) = open_events(dir) {
        append_event_to(&f, what);
    }
}

/// `events.log` in `dir`, opened for appending.
pub fn open_events(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("events.log"))
}

/// One event line into an `events.log` already open (a worker without access to paths).
pub fn append_event_to(mut f: &std::fs::File, what: &str) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let _ = writeln!(f, "{ms} {what}");
}

/// Boots in an `events.log`: every start, and every reset (by the guest or by Strata).
/// The firmware resets the machine once more right after a reset, so resets within two
/// seconds of the previous reset count once.
pub fn count_boots(events: &str) -> u64 {
    let mut boots = 0;
    let mut last_reset: Option<u64> = None;
    for line in events.lines() {
        let Some((ms, what)) = line.split_once(' ') else {
            continue;
        };
        let ms: u64 = ms.parse().unwrap_or(0);
        if what.starts_with("start") {
            boots += 1;
            last_reset = None;
        } else if what.starts_with("reset") {
            if last_reset.is_none_or(|r| ms.saturating_sub(r) > 2000) {
                boots += 1;
            }
            last_reset = Some(ms);
        }
    }
    boots
}

/// Kills a VM process outright (after a polite request failed).
pub fn kill(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Whether the VM's process (named by `pid_file`) is gone within `timeout`.
pub async fn gone_within(pid_file: &Path, id: &VmId, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if live_pid(pid_file, id).is_none() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits up to 5 s for the VM's process (named by `pid_file`) to be gone.
pub async fn wait_gone(
    pid_file: &Path,
    id: &VmId,
    what: &str,
    pid: i32,
) -> Result<(), super::ComputeError> {
    for _ in 0..50 {
        if live_pid(pid_file, id).is_none() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(super::ComputeError::Control {
        id: id.clone(),
        op: "stop",
        reason: format!("{what} {pid} did not exit"),
    })
}

/// Removes a VM's directory (already gone is fine).
pub fn remove(dir: &Path) -> Result<(), super::ComputeError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(super::ComputeError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The VMs under `root` whose process (named by `pid_file` in their directory) runs.
pub fn running(root: &Path, pid_file: &str) -> Vec<VmId> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return vec![];
    };
    rd.filter_map(|e| e.ok())
        .map(|e| VmId(e.file_name().to_string_lossy().to_string()))
        .filter(|id| live_pid(&root.join(&id.0).join(pid_file), id).is_some())
        .collect()
}

/// Boots so far and the last event's words.
pub fn boots(dir: &Path) -> (u64, String) {
    let text = std::fs::read_to_string(dir.join("events.log")).unwrap_or_default();
    let last = text
        .lines()
        .last()
        .and_then(|l| l.split_once(' '))
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (count_boots(&text), last)
}

/// Why a VM that does not run stopped: its last `shutdown` or `panic` event, in words.
pub fn stop_reason(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("events.log"))
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| l.split_once(' ').map(|x| x.1))
        .find(|e| e.starts_with("shutdown") || e.starts_with("panic"))
        .map(|e| {
            e.split_once(' ')
                .map(|(_, r)| r.to_string())
                .unwrap_or(e.to_string())
        })
        .unwrap_or_else(|| "not running".into())
}

/// The first user id of VM processes, and how many there are: a range no distribution
/// allocates (systemd leaves 0x70000000 and up unused).
pub const VM_UID_BASE: u32 = 0x7000_0000;
const VM_UIDS: u32 = 1 << 16;

/// A user for the process of VM `id`: `previous` (the one it had) if no other running VM
/// has it, else one derived from the VM's id and moved on past those of the others;
/// `uid_of` reads a running VM's user.
pub fn choose_uid(
    id: &VmId,
    running: &[VmId],
    previous: Option<u32>,
    uid_of: impl Fn(&VmId) -> Option<u32>,
) -> u32 {
    let taken: std::collections::HashSet<u32> = running
        .iter()
        .filter(|other| *other != id)
        .filter_map(uid_of)
        .collect();
    match previous {
        Some(u) if !taken.contains(&u) => u,
        _ => pick_uid(id, &taken),
    }
}

/// A user derived from the VM's id and moved on past `taken`.
fn pick_uid(id: &VmId, taken: &std::collections::HashSet<u32>) -> u32 {
    let start = super::worker::mac_for(&id.0)
        .iter()
        .skip(3)
        .fold(0u32, |a, b| (a << 8) | u32::from(*b))
        % VM_UIDS;
    (0..VM_UIDS)
        .map(|i| VM_UID_BASE + (start + i) % VM_UIDS)
        .find(|u| !taken.contains(u))
        .unwrap_or(VM_UID_BASE + start)
}

/// Whether this process may hand a VM's process another user (it is root).
pub fn can_drop_privileges() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_count_starts_and_resets_once_per_reboot() {
        let log = "1000 start started by Strata\n\
                   1200 reset rebooted by Strata\n\
                   1260 reset guest rebooted\n\
                   9000 reset rebooted by Strata\n\
                   9040 reset guest rebooted\n\
                   9041 reset guest rebooted\n\
                   20000 reset guest rebooted\n\
                   30000 shutdown stopped by Strata\n\
                   31000 start started by Strata\n";
        assert_eq!(count_boots(log), 5);
        assert_eq!(count_boots(""), 0);
    }

    #[test]
    fn stop_reason_is_the_last_shutdown() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(stop_reason(d.path()), "not running");
        append_event(d.path(), "start started by Strata");
        append_event(d.path(), "shutdown guest powered off");
        append_event(d.path(), "start started by Strata");
        assert_eq!(stop_reason(d.path()), "guest powered off");
        assert_eq!(boots(d.path()).0, 2);
    }
}

//! The KVM worker's seccomp filter: once its VM runs, `strata vmm` may make only the system
//! calls a running VM (and a guest reboot, which builds the VM again) needs. Anything else
//! (starting a program, forking, tracing another process, mounting, loading a module or a
//! BPF program, changing users, opening a network socket) ends the worker with `SIGSYS`:
//! a guest that escapes into the device model finds no way out of it.
//!
//! Two filters are stacked (the kernel applies the strictest answer): an allow-list whose
//! every other call kills the process, and one that answers `clone3` with `ENOSYS` so the
//! C library falls back to `clone`, whose flags a filter can read (`clone3` passes them in
//! memory): only `clone` with `CLONE_THREAD` (a new thread, never a new process) passes.
//! The same construction as Cloud Hypervisor's and Firecracker's per-thread filters, with
//! one list for the whole worker (its threads are few and alike).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the worker's seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot install the worker's seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
    #[error("seccomp filters are built for x86_64 only, not {0}")]
    Arch(&'static str),
}

/// System calls allowed with any arguments.
const ALLOWED: &[libc::c_long] = &[
    // Guest I/O: disks (files and NBD), TAP, the console, logs.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    // Files: the events log, and a reboot opens the kernel, initrd, disks and /dev/kvm again.
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    // Memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Threads, time, signals.
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Event loops.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_eventfd2,
    // The control socket (accept, timeouts) and the NBD connection (Unix sockets only, below).
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
];

/// `ioctl` request types (bits 8-15 of the request): KVM's, and the TTY/TUN type 'T'
/// (TUNSETIFF and friends when a reboot opens the TAP again; FIOCLEX, FIONBIO).
const IOCTL_TYPES: &[u64] = &[0xAE, b'T' as u64];

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(arg, len, op, value)?)
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    Ok(SeccompRule::new(conds)?)
}

fn arch() -> Result<TargetArch, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        other => Err(SeccompError::Arch(other)),
    }
}

/// The allow-list: every call not in it kills the process. With how many calls it names.
fn allow_list() -> Result<(BpfProgram, usize), SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in ALLOWED {
        rules.insert(*nr, vec![]);
    }
    // Threads only: clone must carry CLONE_THREAD.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            Len::Qword,
            Op::MaskedEq(thread),
            thread,
        )?])?],
    );
    // clone3 is answered ENOSYS by the second filter; it must match here so that filter's
    // answer (not this one's kill) is what the caller sees.
    rules.insert(libc::SYS_clone3, vec![]);
    // Unix sockets only (the NBD server on this node).
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(
            0,
            Len::Dword,
            Op::Eq,
            libc::AF_UNIX as u64,
        )?])?],
    );
    // prctl: naming threads only.
    rules.insert(
        libc::SYS_prctl,
        vec![rule(vec![cond(
            0,
            Len::Dword,
            Op::Eq,
            libc::PR_SET_NAME as u64,
        )?])?],
    );
    let mut ioctls = Vec::new();
    for t in IOCTL_TYPES {
        ioctls.push(rule(vec![cond(
            1,
            Len::Dword,
            Op::MaskedEq(0xff00),
            t << 8,
        )?])?);
    }
    rules.insert(libc::SYS_ioctl, ioctls);
    let named = rules.len();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch()?,
    )?;
    Ok((filter.try_into()?, named))
}

/// `clone3` answered with ENOSYS (the C library then uses `clone`).
fn no_clone3() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_clone3, vec![]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the worker's filters on every thread of this process (TSYNC). Needs
/// `no_new_privs` (set by the worker before) or `CAP_SYS_ADMIN`. Returns how many system
/// calls the allow-list names.
pub fn install_worker_filter() -> Result<usize, SeccompError> {
    let (allow, named) = allow_list()?;
    let clone3 = no_clone3()?;
    seccompiler::apply_filter_all_threads(&clone3)?;
    seccompiler::apply_filter_all_threads(&allow)?;
    Ok(named)
}

/// This process's seccomp mode from /proc (0 none, 1 strict, 2 filter); for logs and tests.
pub fn mode() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("Seccomp:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Runs this test binary again as a child that installs the filter and then does
    /// `what` (see `child`); returns its exit status.
    fn in_child(what: &str) -> std::process::ExitStatus {
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        Command::new(exe)
            .args([
                "--exact",
                "compute::seccomp::tests::child",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env("STRATA_SECCOMP_CHILD", what)
            .env("STRATA_SECCOMP_DIR", dir.path())
            .status()
            .unwrap()
    }

    /// Not a test on its own: the body the child runs (ignored in a normal run).
    #[test]
    #[ignore = "run in a child process by the seccomp tests"]
    fn child() {
        let Ok(what) = std::env::var("STRATA_SECCOMP_CHILD") else {
            return;
        };
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            0
        );
        install_worker_filter().unwrap();
        assert_eq!(mode(), Some(2));
        let code = match what.as_str() {
            // What a running VM does: threads, files, Unix sockets, KVM ioctls.
            "allowed" => {
                let t = std::thread::spawn(|| 7).join().unwrap();
                let d = std::path::PathBuf::from(std::env::var_os("STRATA_SECCOMP_DIR").unwrap())
                    .join("file");
                std::fs::write(&d, b"x").unwrap();
                let back = std::fs::read(&d).unwrap();
                let nbd = std::os::unix::net::UnixStream::connect(d.with_extension("sock"));
                assert_eq!(nbd.unwrap_err().kind(), std::io::ErrorKind::NotFound);
                if let Ok(kvm) = std::fs::File::open("/dev/kvm") {
                    use std::os::fd::AsRawFd;
                    // KVM_GET_API_VERSION
                    // SAFETY: an ioctl without arguments on an open fd.
                    let v = unsafe { libc::ioctl(kvm.as_raw_fd(), 0xAE00, 0) };
                    assert_eq!(v, 12);
                }
                if t == 7 && back == b"x" {
                    0
                } else {
                    1
                }
            }
            // Starting a program: fork (clone without CLONE_THREAD) is refused.
            "spawn" => {
                let _ = Command::new("/bin/true").status();
                3
            }
            // A network socket.
            "inet" => {
                let _ = std::net::UdpSocket::bind("127.0.0.1:0");
                3
            }
            // Tracing another process.
            "ptrace" => {
                // SAFETY: PTRACE_ATTACH on our parent; refused before it runs.
                unsafe { libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0) };
                3
            }
            // Giving a thread capabilities back.
            "prctl" => {
                // SAFETY: integer arguments only.
                unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_CLEAR_ALL,
                        0,
                        0,
                        0,
                    )
                };
                3
            }
            _ => 2,
        };
        std::process::exit(code);
    }

    #[test]
    fn a_running_vms_calls_pass() {
        let st = in_child("allowed");
        assert!(st.success(), "{st:?}");
    }

    #[test]
    fn forbidden_calls_end_the_worker() {
        for what in ["spawn", "inet", "ptrace", "prctl"] {
            let st = in_child(what);
            assert_eq!(st.signal(), Some(libc::SIGSYS), "{what}: {st:?}");
        }
    }
}

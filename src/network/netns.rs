//! Network namespaces owned by the daemon: created by a short-lived thread that unshares
//! its network namespace, and kept alive by an open file descriptor (no bind mount, so
//! several nodes on one machine never share a name, and a namespace goes away with the
//! daemon that made it, along with the devices inside it).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

pub struct Netns {
    fd: File,
}

impl Netns {
    /// A new, empty network namespace (only `lo`, down).
    pub fn create() -> io::Result<Netns> {
        on_fresh_thread(|| {
            // SAFETY: unshare only changes this (throwaway) thread's namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = File::open("/proc/thread-self/ns/net")?;
            Ok(Netns { fd })
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` on a thread inside the namespace: sockets it creates live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let fd = self.fd.as_raw_fd();
        on_fresh_thread(move || {
            // SAFETY: setns only changes this (throwaway) thread's namespace; `fd` is an
            // open namespace file owned by `self`, which outlives the thread.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
    }
}

/// Namespace changes stick to a thread: they are made on one that exits right after, never
/// on a runtime's worker.
fn on_fresh_thread<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

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

/// Sends gratuitous ARP requests for `ip` (ours, at `mac`) out of interface `ifname` of
/// the calling thread's namespace: to each MAC in `to` (the overlay does not flood, so
/// hosts that may have the address cached are told one by one) and to the broadcast
/// address (for whatever listens on the local bridge).
pub fn send_garps(
    ifname: &str,
    mac: [u8; 6],
    ip: std::net::Ipv4Addr,
    to: &[[u8; 6]],
) -> io::Result<()> {
    const ETH_P_ARP: u16 = 0x0806;
    let name =
        std::ffi::CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut frame = [0u8; 42];
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    frame[38..42].copy_from_slice(&ip.octets());
    for dst in to.iter().chain(std::iter::once(&[0xff; 6])) {
        frame[0..6].copy_from_slice(dst);
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_ARP.to_be();
        sa.sll_ifindex = index as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(dst);
        // SAFETY: the frame and address outlive the call; sizes are theirs.
        let n = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

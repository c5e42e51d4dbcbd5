//! Frame backends for virtio-net: a Linux TAP device with a 12-byte vnet header, or
//! anything else that moves whole frames (tests use a socket pair).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Moves frames, each prefixed by the 12-byte `virtio_net_hdr_v1`.
pub trait NetBackend: Send {
    /// Reads one frame; `WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one frame.
    fn send(&mut self, buf: &[u8]) -> std::io::Result<usize>;
    /// Readable when a frame is waiting.
    fn raw_fd(&self) -> RawFd;
}

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `virtio_net_hdr_v1` (with `num_buffers`), the header of every frame on the queues.
pub const VNET_HDR_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP name {0:?} is empty or longer than 15 bytes")]
    BadName(String),
    #[error("cannot open /dev/net/tun")]
    Open(#[source] std::io::Error),
    #[error("cannot attach to TAP {name} ({op})")]
    Ioctl {
        name: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (or creates) TAP `name` in vnet-header mode, non-blocking, no offloads.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() > 15 || name.contains('\0') {
            return Err(TapError::BadName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let fd = file.as_raw_fd();
        let ioctl_err = |op| {
            let source = std::io::Error::last_os_error();
            TapError::Ioctl {
                name: name.to_string(),
                op,
                source,
            }
        };
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is one (40 bytes,
        // C layout) and outlives the call.
        if unsafe { libc::ioctl(fd, TUNSETIFF, &mut req as *mut IfReq) } < 0 {
            return Err(ioctl_err("TUNSETIFF"));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        if unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ, &hdr_len as *const libc::c_int) } < 0 {
            return Err(ioctl_err("TUNSETVNETHDRSZ"));
        }
        // SAFETY: TUNSETOFFLOAD takes its flags by value; 0 turns every offload off.
        if unsafe { libc::ioctl(fd, TUNSETOFFLOAD, 0 as libc::c_ulong) } < 0 {
            return Err(ioctl_err("TUNSETOFFLOAD"));
        }
        tracing::info!(tap = name, "TAP attached");
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TAP's descriptor, for another VMM (QEMU takes it over QMP).
    pub fn into_file(self) -> File {
        self.file
    }

    /// The same TAP queue through a second descriptor (a VM built again after a reboot
    /// uses it without opening the TAP, which would need CAP_NET_ADMIN).
    pub fn try_clone(&self) -> std::io::Result<Tap> {
        Ok(Tap {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }
}

impl NetBackend for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
    fn send(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A datagram socket as a frame backend (tests, or a userspace switch).
impl NetBackend for std::os::unix::net::UnixDatagram {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::os::unix::net::UnixDatagram::recv(self, buf)
    }
    fn send(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::os::unix::net::UnixDatagram::send(self, buf)
    }
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        assert!(matches!(Tap::open(""), Err(TapError::BadName(_))));
        assert!(matches!(
            Tap::open("a-name-that-is-too-long"),
            Err(TapError::BadName(_))
        ));
    }

    #[test]
    fn ifreq_is_40_bytes() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}

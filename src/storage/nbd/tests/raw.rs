//! A raw protocol client for tests: it sends exactly the bytes it is told to.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::storage::nbd::proto::*;

pub struct Raw {
    stream: UnixStream,
    next_cookie: u64,
}

impl Raw {
    pub fn new(stream: UnixStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw {
            stream,
            next_cookie: 1 << 32,
        }
    }

    pub fn connect(path: &Path) -> Self {
        Self::new(UnixStream::connect(path).unwrap())
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.stream.read_exact(&mut b).unwrap();
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.read_bytes(4).try_into().unwrap())
    }

    /// Reads the greeting, sends `client_flags`; the server's handshake flags.
    pub fn greet(&mut self, client_flags: u32) -> u16 {
        let g = self.read_bytes(18);
        assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
        self.send(&client_flags.to_be_bytes());
        u16::from_be_bytes([g[16], g[17]])
    }

    /// Sends an option; every reply up to the final one (not INFO or SERVER).
    pub fn option(&mut self, option: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        self.send(&encode_option_header(option, data.len() as u32));
        self.send(data);
        let mut replies = Vec::new();
        loop {
            let h: [u8; OPTION_REPLY_HEADER_LEN] =
                self.read_bytes(OPTION_REPLY_HEADER_LEN).try_into().unwrap();
            let (opt, reply, len) = decode_option_reply_header(&h).unwrap();
            assert_eq!(opt, option, "a reply to another option");
            let data = self.read_bytes(len as usize);
            replies.push((reply, data));
            if reply != REP_INFO && reply != REP_SERVER {
                return replies;
            }
        }
    }

    /// Negotiates `name` with NBD_OPT_GO; its size and transmission flags.
    pub fn go(&mut self, name: &str) -> (u64, u16) {
        self.greet(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        let replies = self.option(OPT_GO, &encode_info_request(name, &[INFO_BLOCK_SIZE]));
        assert_eq!(replies.last().unwrap().0, REP_ACK, "{replies:?}");
        replies
            .iter()
            .find_map(|(_, d)| match decode_info(d) {
                Ok(Info::Export { size, flags }) => Some((size, flags)),
                _ => None,
            })
            .expect("NBD_INFO_EXPORT")
    }

    pub fn request(
        &mut self,
        command: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) {
        let r = Request {
            flags,
            command,
            cookie,
            offset,
            length,
        };
        let mut b = r.encode().to_vec();
        b.extend_from_slice(payload);
        self.send(&b);
    }

    /// A simple reply header: (error, cookie).
    pub fn reply(&mut self) -> (u32, u64) {
        let magic = self.u32();
        assert_eq!(magic, SIMPLE_REPLY_MAGIC);
        let error = self.u32();
        let cookie = u64::from_be_bytes(self.read_bytes(8).try_into().unwrap());
        (error, cookie)
    }

    /// A request without reply data; the error of its reply.
    pub fn request_reply(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> u32 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.request(command, flags, cookie, offset, length, payload);
        let (error, got) = self.reply();
        assert_eq!(got, cookie);
        error
    }

    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Whether the server closed the connection (without sending anything more).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// NBD_CMD_DISC, after which the server closes the connection.
    pub fn disconnect(mut self) {
        self.request(CMD_DISC, 0, 0, 0, 0, &[]);
        assert!(self.closed(), "the server closes after NBD_CMD_DISC");
    }
}

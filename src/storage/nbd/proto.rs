//! The NBD wire format (fixed newstyle negotiation, simple replies): constants and pure
//! encoders and decoders, so the protocol core is tested without any I/O.

use super::NbdError;

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
/// The second magic of the (unsupported) oldstyle negotiation.
pub const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_FLAG_ERROR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

// Information types of NBD_OPT_INFO and NBD_OPT_GO.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands and command flags.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

// Error values of replies (equal to the Linux errno values of the same name).
pub const NBD_EPERM: u32 = 1;
pub const NBD_EIO: u32 = 5;
pub const NBD_ENOMEM: u32 = 12;
pub const NBD_EINVAL: u32 = 22;
pub const NBD_ENOSPC: u32 = 28;
pub const NBD_EOVERFLOW: u32 = 75;
pub const NBD_ENOTSUP: u32 = 95;
pub const NBD_ESHUTDOWN: u32 = 108;

/// Size constraints this implementation advertises and enforces.
pub const MIN_BLOCK: u32 = 512;
pub const PREFERRED_BLOCK: u32 = 4096;
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Longest string (export name, message) the protocol allows.
pub const MAX_STRING: usize = 4096;
/// Largest option data (and option reply) accepted; NBD_OPT_GO needs about 4 KiB.
pub const MAX_OPTION_LEN: u32 = 64 << 10;

pub const OPTION_HEADER_LEN: usize = 16;
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
pub const REQUEST_LEN: usize = 28;
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Reserved zeroes after the NBD_OPT_EXPORT_NAME reply, unless NO_ZEROES was agreed.
pub const EXPORT_NAME_ZEROES: usize = 124;

pub fn option_name(option: u32) -> &'static str {
    match option {
        OPT_EXPORT_NAME => "NBD_OPT_EXPORT_NAME",
        OPT_ABORT => "NBD_OPT_ABORT",
        OPT_LIST => "NBD_OPT_LIST",
        OPT_STARTTLS => "NBD_OPT_STARTTLS",
        OPT_INFO => "NBD_OPT_INFO",
        OPT_GO => "NBD_OPT_GO",
        OPT_STRUCTURED_REPLY => "NBD_OPT_STRUCTURED_REPLY",
        OPT_LIST_META_CONTEXT => "NBD_OPT_LIST_META_CONTEXT",
        OPT_SET_META_CONTEXT => "NBD_OPT_SET_META_CONTEXT",
        OPT_EXTENDED_HEADERS => "NBD_OPT_EXTENDED_HEADERS",
        _ => "an unknown option",
    }
}

pub fn reply_name(reply: u32) -> &'static str {
    match reply {
        REP_ACK => "NBD_REP_ACK",
        REP_SERVER => "NBD_REP_SERVER",
        REP_INFO => "NBD_REP_INFO",
        REP_ERR_UNSUP => "NBD_REP_ERR_UNSUP",
        REP_ERR_POLICY => "NBD_REP_ERR_POLICY",
        REP_ERR_INVALID => "NBD_REP_ERR_INVALID",
        REP_ERR_PLATFORM => "NBD_REP_ERR_PLATFORM",
        REP_ERR_TLS_REQD => "NBD_REP_ERR_TLS_REQD",
        REP_ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN",
        REP_ERR_SHUTDOWN => "NBD_REP_ERR_SHUTDOWN",
        REP_ERR_BLOCK_SIZE_REQD => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        REP_ERR_TOO_BIG => "NBD_REP_ERR_TOO_BIG",
        r if r & REP_FLAG_ERROR != 0 => "an unknown error reply",
        _ => "an unknown reply",
    }
}

pub fn command_name(command: u16) -> &'static str {
    match command {
        CMD_READ => "NBD_CMD_READ",
        CMD_WRITE => "NBD_CMD_WRITE",
        CMD_DISC => "NBD_CMD_DISC",
        CMD_FLUSH => "NBD_CMD_FLUSH",
        CMD_TRIM => "NBD_CMD_TRIM",
        CMD_CACHE => "NBD_CMD_CACHE",
        CMD_WRITE_ZEROES => "NBD_CMD_WRITE_ZEROES",
        CMD_BLOCK_STATUS => "NBD_CMD_BLOCK_STATUS",
        _ => "an unknown command",
    }
}

pub fn error_name(error: u32) -> &'static str {
    match error {
        0 => "success",
        NBD_EPERM => "NBD_EPERM",
        NBD_EIO => "NBD_EIO",
        NBD_ENOMEM => "NBD_ENOMEM",
        NBD_EINVAL => "NBD_EINVAL",
        NBD_ENOSPC => "NBD_ENOSPC",
        NBD_EOVERFLOW => "NBD_EOVERFLOW",
        NBD_ENOTSUP => "NBD_ENOTSUP",
        NBD_ESHUTDOWN => "NBD_ESHUTDOWN",
        _ => "an unknown error",
    }
}

/// The NBD error value a server reports for a local errno (see `VolumeError::errno`).
pub fn error_from_errno(errno: i32) -> u32 {
    match errno {
        libc::EPERM | libc::EROFS | libc::EACCES => NBD_EPERM,
        libc::ENOMEM => NBD_ENOMEM,
        libc::EINVAL => NBD_EINVAL,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => NBD_ENOSPC,
        libc::EOVERFLOW => NBD_EOVERFLOW,
        libc::ENOTSUP => NBD_ENOTSUP,
        libc::ESHUTDOWN => NBD_ESHUTDOWN,
        _ => NBD_EIO,
    }
}

/// The errno a client reports for an NBD error value; unknown values count as EINVAL
/// (as the protocol asks).
pub fn errno_from_error(error: u32) -> i32 {
    match error {
        NBD_EPERM => libc::EPERM,
        NBD_EIO => libc::EIO,
        NBD_ENOMEM => libc::ENOMEM,
        NBD_ENOSPC => libc::ENOSPC,
        NBD_EOVERFLOW => libc::EOVERFLOW,
        NBD_ENOTSUP => libc::ENOTSUP,
        NBD_ESHUTDOWN => libc::ESHUTDOWN,
        _ => libc::EINVAL,
    }
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// What the server sends first: magic, IHAVEOPT and the handshake flags.
pub fn encode_greeting(flags: u16) -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..].copy_from_slice(&flags.to_be_bytes());
    b
}

/// The header of an option the client sends; its data follows.
pub fn encode_option_header(option: u32, len: u32) -> [u8; OPTION_HEADER_LEN] {
    let mut b = [0u8; OPTION_HEADER_LEN];
    b[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[8..12].copy_from_slice(&option.to_be_bytes());
    b[12..].copy_from_slice(&len.to_be_bytes());
    b
}

/// Decodes an option header into (option, data length).
pub fn decode_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<(u32, u32), NbdError> {
    let magic = be_u64(b);
    if magic != IHAVEOPT {
        return Err(NbdError::BadMagic {
            what: "option header",
            expected: IHAVEOPT,
            got: magic,
        });
    }
    Ok((be_u32(&b[8..]), be_u32(&b[12..])))
}

/// A complete option reply (header and data).
pub fn encode_option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(OPTION_REPLY_HEADER_LEN + data.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Decodes an option reply header into (option, reply type, data length).
pub fn decode_option_reply_header(
    b: &[u8; OPTION_REPLY_HEADER_LEN],
) -> Result<(u32, u32, u32), NbdError> {
    let magic = be_u64(b);
    if magic != OPTION_REPLY_MAGIC {
        return Err(NbdError::BadMagic {
            what: "option reply",
            expected: OPTION_REPLY_MAGIC,
            got: magic,
        });
    }
    Ok((be_u32(&b[8..]), be_u32(&b[12..]), be_u32(&b[16..])))
}

/// The data of NBD_OPT_INFO and NBD_OPT_GO: an export name and information requests.
#[derive(Debug, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

pub fn encode_info_request(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(6 + name.len() + 2 * infos.len());
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        b.extend_from_slice(&i.to_be_bytes());
    }
    b
}

/// Parses NBD_OPT_INFO / NBD_OPT_GO data; the error is a message for NBD_REP_ERR_INVALID.
pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest, String> {
    if data.len() < 6 {
        return Err(format!(
            "option data of {} bytes is shorter than the 6 bytes of an empty request",
            data.len()
        ));
    }
    let name_len = be_u32(data) as usize;
    if name_len > MAX_STRING {
        return Err(format!(
            "export name of {name_len} bytes is longer than {MAX_STRING}"
        ));
    }
    if name_len > data.len() - 6 {
        return Err(format!(
            "export name of {name_len} bytes does not fit in {} bytes of option data",
            data.len()
        ));
    }
    let name = std::str::from_utf8(&data[4..4 + name_len])
        .map_err(|_| "export name is not UTF-8".to_string())?
        .to_string();
    let rest = &data[4 + name_len..];
    let count = be_u16(rest) as usize;
    let list = &rest[2..];
    if list.len() != 2 * count {
        return Err(format!(
            "{count} information requests need {} bytes, got {}",
            2 * count,
            list.len()
        ));
    }
    let infos = list.chunks_exact(2).map(be_u16).collect();
    Ok(InfoRequest { name, infos })
}

/// NBD_REP_INFO data for NBD_INFO_EXPORT.
pub fn encode_info_export(size: u64, flags: u16) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..2].copy_from_slice(&INFO_EXPORT.to_be_bytes());
    b[2..10].copy_from_slice(&size.to_be_bytes());
    b[10..].copy_from_slice(&flags.to_be_bytes());
    b
}

/// NBD_REP_INFO data for NBD_INFO_BLOCK_SIZE.
pub fn encode_info_block_size(min: u32, preferred: u32, max: u32) -> [u8; 14] {
    let mut b = [0u8; 14];
    b[..2].copy_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    b[2..6].copy_from_slice(&min.to_be_bytes());
    b[6..10].copy_from_slice(&preferred.to_be_bytes());
    b[10..].copy_from_slice(&max.to_be_bytes());
    b
}

/// One NBD_REP_INFO item, as a client understands it.
#[derive(Debug, PartialEq, Eq)]
pub enum Info {
    Export {
        size: u64,
        flags: u16,
    },
    BlockSize {
        min: u32,
        preferred: u32,
        max: u32,
    },
    /// A type this client does not use (it must ignore it).
    Other(u16),
}

pub fn decode_info(data: &[u8]) -> Result<Info, NbdError> {
    let bad = |what: &str| {
        NbdError::Protocol(format!(
            "NBD_REP_INFO {what} has {} bytes of data",
            data.len()
        ))
    };
    if data.len() < 2 {
        return Err(bad("without a type"));
    }
    match be_u16(data) {
        INFO_EXPORT if data.len() == 12 => Ok(Info::Export {
            size: be_u64(&data[2..]),
            flags: be_u16(&data[10..]),
        }),
        INFO_EXPORT => Err(bad("NBD_INFO_EXPORT")),
        INFO_BLOCK_SIZE if data.len() == 14 => Ok(Info::BlockSize {
            min: be_u32(&data[2..]),
            preferred: be_u32(&data[6..]),
            max: be_u32(&data[10..]),
        }),
        INFO_BLOCK_SIZE => Err(bad("NBD_INFO_BLOCK_SIZE")),
        other => Ok(Info::Other(other)),
    }
}

/// A transmission request header (any write payload follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.command.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Self, NbdError> {
        let magic = be_u32(b);
        if magic != REQUEST_MAGIC {
            return Err(NbdError::BadMagic {
                what: "request",
                expected: REQUEST_MAGIC.into(),
                got: magic.into(),
            });
        }
        Ok(Request {
            flags: be_u16(&b[4..]),
            command: be_u16(&b[6..]),
            cookie: be_u64(&b[8..]),
            offset: be_u64(&b[16..]),
            length: be_u32(&b[24..]),
        })
    }
}

/// A simple reply header (read data follows it on success).
pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// Decodes a simple reply header into (error, cookie).
pub fn decode_simple_reply(b: &[u8; SIMPLE_REPLY_LEN]) -> Result<(u32, u64), NbdError> {
    let magic = be_u32(b);
    if magic != SIMPLE_REPLY_MAGIC {
        let hint = if magic == STRUCTURED_REPLY_MAGIC {
            " (a structured reply, which was not negotiated)"
        } else {
            ""
        };
        return Err(NbdError::Protocol(format!(
            "reply magic {magic:#x} is not the simple reply magic {SIMPLE_REPLY_MAGIC:#x}{hint}"
        )));
    }
    Ok((be_u32(&b[4..]), be_u64(&b[8..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_magic_is_named() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            command: CMD_WRITE,
            cookie: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            length: 4096,
        };
        let b = r.encode();
        assert_eq!(&b[..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(Request::decode(&b).unwrap(), r);
        let mut bad = b;
        bad[0] = 0;
        let e = Request::decode(&bad).unwrap_err();
        assert!(
            matches!(
                e,
                NbdError::BadMagic {
                    what: "request",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("0x25609513"), "{e}");
    }

    #[test]
    fn replies_and_option_headers_round_trip() {
        let b = encode_simple_reply(NBD_EINVAL, 77);
        assert_eq!(decode_simple_reply(&b).unwrap(), (NBD_EINVAL, 77));
        let mut s = b;
        s[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let e = decode_simple_reply(&s).unwrap_err();
        assert!(e.to_string().contains("structured reply"), "{e}");

        let h = encode_option_header(OPT_GO, 42);
        assert_eq!(decode_option_header(&h).unwrap(), (OPT_GO, 42));
        let mut g = h;
        g[3] ^= 0xff;
        assert!(matches!(
            decode_option_header(&g),
            Err(NbdError::BadMagic { .. })
        ));

        let r = encode_option_reply(OPT_LIST, REP_ERR_UNSUP, b"no");
        let mut hdr = [0u8; OPTION_REPLY_HEADER_LEN];
        hdr.copy_from_slice(&r[..OPTION_REPLY_HEADER_LEN]);
        assert_eq!(
            decode_option_reply_header(&hdr).unwrap(),
            (OPT_LIST, REP_ERR_UNSUP, 2)
        );
        assert_eq!(&r[OPTION_REPLY_HEADER_LEN..], b"no");
        let greeting = encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        assert_eq!(&greeting[16..], &[0, 3]);
    }

    #[test]
    fn info_requests_are_parsed_and_malformed_ones_explained() {
        let data = encode_info_request("disk-1", &[INFO_BLOCK_SIZE, INFO_NAME]);
        assert_eq!(
            parse_info_request(&data).unwrap(),
            InfoRequest {
                name: "disk-1".into(),
                infos: vec![INFO_BLOCK_SIZE, INFO_NAME]
            }
        );
        assert!(parse_info_request(&[0, 0, 0])
            .unwrap_err()
            .contains("shorter"));
        // The name length points past the data.
        let mut long = data.clone();
        long[3] = 200;
        assert!(parse_info_request(&long)
            .unwrap_err()
            .contains("does not fit"));
        // The count of information requests disagrees with the data.
        let mut count = data.clone();
        let at = 4 + "disk-1".len() + 1;
        count[at] = 9;
        assert!(parse_info_request(&count)
            .unwrap_err()
            .contains("information requests"));
        let huge = encode_info_request(&"x".repeat(MAX_STRING + 1), &[]);
        assert!(parse_info_request(&huge).unwrap_err().contains("longer"));
        let mut utf = encode_info_request("ab", &[]);
        utf[4] = 0xff;
        assert!(parse_info_request(&utf).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn info_items_are_decoded() {
        assert_eq!(
            decode_info(&encode_info_export(1 << 30, FLAG_HAS_FLAGS)).unwrap(),
            Info::Export {
                size: 1 << 30,
                flags: FLAG_HAS_FLAGS
            }
        );
        assert_eq!(
            decode_info(&encode_info_block_size(512, 4096, MAX_PAYLOAD)).unwrap(),
            Info::BlockSize {
                min: 512,
                preferred: 4096,
                max: MAX_PAYLOAD
            }
        );
        assert_eq!(decode_info(&[0, 2, 1]).unwrap(), Info::Other(2));
        assert!(decode_info(&[0, 0, 1]).is_err());
        assert!(decode_info(&[0]).is_err());
    }

    #[test]
    fn errors_map_both_ways() {
        assert_eq!(error_from_errno(libc::EINVAL), NBD_EINVAL);
        assert_eq!(error_from_errno(libc::EPERM), NBD_EPERM);
        assert_eq!(error_from_errno(libc::ENOSPC), NBD_ENOSPC);
        assert_eq!(error_from_errno(libc::EDQUOT), NBD_ENOSPC);
        assert_eq!(error_from_errno(libc::EIO), NBD_EIO);
        assert_eq!(error_from_errno(libc::EBADF), NBD_EIO);
        for e in [
            NBD_EPERM,
            NBD_EIO,
            NBD_ENOMEM,
            NBD_EINVAL,
            NBD_ENOSPC,
            NBD_EOVERFLOW,
            NBD_ENOTSUP,
            NBD_ESHUTDOWN,
        ] {
            assert_eq!(
                error_from_errno(errno_from_error(e)),
                e,
                "{}",
                error_name(e)
            );
        }
        assert_eq!(errno_from_error(9999), libc::EINVAL);
    }
}

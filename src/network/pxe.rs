//! Network install of further servers from a running node: a proxy DHCP server (the PXE
//! specification's "proxyDHCP": the network's own DHCP server keeps handing out
//! addresses, this one only names the boot file) on UDP ports 67 and 4011, and the files
//! iPXE then loads over HTTP (port 7447): a boot script, the installer's kernel and
//! initramfs (the ones this node runs), their SHA-256 sums and the cluster's install
//! config. Network boot firmware that is not iPXE (a server's built-in PXE, UEFI PXE)
//! first loads iPXE over TFTP (Debian's `undionly.kpxe` for BIOS, `snponly.efi` for
//! UEFI, carried in the image), which asks again as iPXE.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;

use super::dhcp::{self, ClientMessage};

/// The HTTP port of the network-install files.
pub const HTTP_PORT: u16 = 7447;
const PROXY_PORT: u16 = 4011;
/// Where the image carries the iPXE chain loaders.
pub const CHAIN_DIR: &str = "/usr/lib/strata/pxe";
const BIOS_LOADER: &str = "undionly.kpxe";
const UEFI_LOADER: &str = "snponly.efi";

/// What is served: the installer kernel and initramfs, and how to make the install config.
pub struct PxeFiles {
    pub kernel: Bytes,
    pub initrd: Bytes,
    pub sums: String,
    /// iPXE chain loaders served over TFTP, by name.
    pub chain: Arc<HashMap<String, Bytes>>,
    /// The node's address, as servers reach it.
    pub server: Ipv4Addr,
    /// The install config for servers installed from here (TOML).
    pub config: Box<dyn Fn() -> String + Send + Sync>,
}

#[derive(Debug, thiserror::Error)]
pub enum PxeError {
    #[error("cannot read {path} (the network installer's files)")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the network install files failed: {0}")]
    Task(String),
    #[error("cannot listen on {what}")]
    Listen {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl PxeFiles {
    /// Loads `vmlinuz` and `initrd.img` from `dir` (an installed node's system slot), and
    /// the chain loaders from `dir` or `CHAIN_DIR` where present.
    pub fn load(
        dir: &Path,
        server: Ipv4Addr,
        config: Box<dyn Fn() -> String + Send + Sync>,
    ) -> Result<PxeFiles, PxeError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|source| PxeError::Read { path, source })
        };
        let (kernel, initrd) = (read("vmlinuz")?, read("initrd.img")?);
        // The installer leaves the sums it checked the system against next to it.
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap_or_else(|_| {
            format!(
                "{}  boot/vmlinuz\n{}  boot/initrd.img\n",
                hex::encode(Sha256::digest(&kernel)),
                hex::encode(Sha256::digest(&initrd))
            )
        });
        let mut chain = HashMap::new();
        for name in [BIOS_LOADER, UEFI_LOADER] {
            let found = [dir, Path::new(CHAIN_DIR)]
                .iter()
                .find_map(|d| std::fs::read(d.join(name)).ok());
            if let Some(b) = found {
                chain.insert(name.to_string(), Bytes::from(b));
            }
        }
        Ok(PxeFiles {
            kernel,
            initrd,
            sums,
            chain: Arc::new(chain),
            server,
            config,
        })
    }

    fn base(&self) -> String {
        format!("http://{}:{HTTP_PORT}/pxe", self.server)
    }

    /// The iPXE script: the installer kernel in install mode, told where its files are.
    pub fn script(&self) -> String {
        let b = self.base();
        format!(
            "#!ipxe\n\
             echo Strata network install from {s}\n\
             kernel {b}/vmlinuz initrd=initrd.img strata.mode=install strata.medium={b} BOOTIF=01-${{netX/mac:hexhyp}} console=tty0 console=ttyS0,115200 panic=10\n\
             initrd {b}/initrd.img\n\
             boot\n",
            s = self.server
        )
    }
}

/// The boot file for a network boot client: the HTTP script for iPXE, the chain loader
/// over TFTP for other PXE firmware of a known architecture, None for anything else.
pub fn boot_file(m: &ClientMessage, files: &PxeFiles) -> Option<String> {
    if !m.vendor_class.starts_with(b"PXEClient") {
        return None;
    }
    if m.user_class.windows(4).any(|w| w == b"iPXE") {
        return Some(format!("{}/boot.ipxe", files.base()));
    }
    let loader = match m.client_arch {
        None | Some(0) => BIOS_LOADER,
        // EFI byte code and x86-64 (RFC 4578).
        Some(7) | Some(9) => UEFI_LOADER,
        Some(_) => return None,
    };
    files.chain.contains_key(loader).then(|| loader.to_string())
}

/// A proxyDHCP answer (OFFER to a DISCOVER on port 67, ACK to a REQUEST on 4011): no
/// address, the boot file, and PXE's markers.
pub fn proxy_reply(m: &ClientMessage, kind: u8, server: Ipv4Addr, file: &str) -> Vec<u8> {
    let mut out = vec![0u8; dhcp::FIXED];
    out[0] = dhcp::OP_REPLY;
    out[1] = 1;
    out[2] = 6;
    out[4..8].copy_from_slice(&m.xid.to_be_bytes());
    out[10..12].copy_from_slice(&m.flags.to_be_bytes());
    out[12..16].copy_from_slice(&m.ciaddr.octets());
    out[20..24].copy_from_slice(&server.octets());
    out[28..34].copy_from_slice(&m.chaddr);
    let name = file.as_bytes();
    let n = name.len().min(127);
    out[108..108 + n].copy_from_slice(&name[..n]);
    out.extend_from_slice(&dhcp::MAGIC);
    dhcp::put(&mut out, 53, &[kind]);
    dhcp::put(&mut out, 54, &server.octets());
    dhcp::put(&mut out, 60, b"PXEClient");
    if !m.client_uuid.is_empty() {
        dhcp::put(&mut out, 97, &m.client_uuid);
    }
    // PXE discovery control: boot the file named here, no boot server discovery.
    dhcp::put(&mut out, 43, &[6, 1, 8, 255]);
    dhcp::put(&mut out, 67, name);
    if !file.contains("://") {
        // A TFTP file: the server to fetch it from.
        dhcp::put(&mut out, 66, server.to_string().as_bytes());
    }
    out.push(255);
    if out.len() < 300 {
        out.resize(300, 0);
    }
    out
}

/// The answer to a datagram on port 67 (`proxy` false) or 4011, if any.
pub fn answer(datagram: &[u8], proxy: bool, files: &PxeFiles) -> Option<Vec<u8>> {
    let m = dhcp::parse(datagram).ok()?;
    let file = boot_file(&m, files)?;
    let kind = match (proxy, m.kind) {
        (false, dhcp::DISCOVER) => dhcp::OFFER,
        (true, dhcp::REQUEST) | (true, dhcp::INFORM) => dhcp::ACK,
        // A REQUEST on 67 names the address server's offer: not ours to answer.
        _ => return None,
    };
    Some(proxy_reply(&m, kind, files.server, &file))
}

/// Runs the proxyDHCP server (ports 67 and 4011) for as long as the task runs.
pub async fn serve_proxy_dhcp(
    files: Arc<PxeFiles>,
    interface: Option<String>,
) -> Result<(), PxeError> {
    let bind = |port: u16| {
        let interface = interface.clone();
        async move {
            let listen = |source| PxeError::Listen {
                what: format!("UDP port {port} (proxy DHCP)"),
                source,
            };
            let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                .await
                .map_err(listen)?;
            s.set_broadcast(true).map_err(listen)?;
            if let Some(i) = &interface {
                s.bind_device(Some(i.as_bytes())).map_err(listen)?;
            }
            Ok::<_, PxeError>(s)
        }
    };
    let (dhcp_sock, proxy_sock) = (bind(67).await?, bind(PROXY_PORT).await?);
    if !files.chain.is_empty() {
        let tftp = bind(super::tftp::PORT).await?;
        tokio::spawn(super::tftp::serve(tftp, files.chain.clone()));
    }
    tracing::info!(server = %files.server, "network install (PXE) served");
    let (mut a, mut b) = (vec![0u8; 1500], vec![0u8; 1500]);
    loop {
        let (proxy, n, from) = tokio::select! {
            r = dhcp_sock.recv_from(&mut a) => match r { Ok((n, f)) => (false, n, f), Err(_) => continue },
            r = proxy_sock.recv_from(&mut b) => match r { Ok((n, f)) => (true, n, f), Err(_) => continue },
        };
        let buf = if proxy { &b[..n] } else { &a[..n] };
        let Some(reply) = answer(buf, proxy, &files) else {
            continue;
        };
        let (sock, to) = if proxy {
            (&proxy_sock, from)
        } else {
            (&dhcp_sock, SocketAddr::from((Ipv4Addr::BROADCAST, 68)))
        };
        tracing::info!(client = %from, proxy, "network boot client answered");
        if let Err(e) = sock.send_to(&reply, to).await {
            tracing::warn!(error = %e, %to, "proxy DHCP answer not sent");
        }
    }
}

/// The HTTP routes under `/pxe`.
pub fn routes(files: Arc<PxeFiles>) -> Router {
    Router::new()
        .route("/pxe/boot.ipxe", get(script))
        .route("/pxe/vmlinuz", get(kernel))
        .route("/pxe/initrd.img", get(initrd))
        .route("/pxe/SHA256SUMS", get(sums))
        .route("/pxe/install.toml", get(config))
        .with_state(files)
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn binary(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}

async fn script(State(f): State<Arc<PxeFiles>>) -> Response {
    text(f.script())
}

async fn kernel(State(f): State<Arc<PxeFiles>>) -> Response {
    binary(f.kernel.clone())
}

async fn initrd(State(f): State<Arc<PxeFiles>>) -> Response {
    binary(f.initrd.clone())
}

async fn sums(State(f): State<Arc<PxeFiles>>) -> Response {
    text(f.sums.clone())
}

async fn config(State(f): State<Arc<PxeFiles>>) -> Response {
    text((f.config)())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> PxeFiles {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(d.path().join("initrd.img"), b"initrd").unwrap();
        std::fs::write(d.path().join("snponly.efi"), b"ipxe").unwrap();
        PxeFiles::load(
            d.path(),
            Ipv4Addr::new(10, 0, 2, 15),
            Box::new(|| "mode = \"join\"\n".into()),
        )
        .unwrap()
    }

    /// A client message with the given type and options (code, value).
    fn client(kind: u8, opts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; dhcp::FIXED];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x57]);
        b.extend_from_slice(&dhcp::MAGIC);
        dhcp::put(&mut b, 53, &[kind]);
        for (c, v) in opts {
            dhcp::put(&mut b, *c, v);
        }
        b.push(255);
        b
    }

    #[test]
    fn ipxe_clients_get_the_script_and_others_nothing() {
        let f = files();
        let ipxe: [(u8, &[u8]); 4] = [
            (60, b"PXEClient:Arch:00000:UNDI:002001"),
            (77, b"iPXE"),
            (93, &[0, 0]),
            (97, &[0, 1, 2, 3]),
        ];
        let offer = answer(&client(dhcp::DISCOVER, &ipxe), false, &f).expect("an offer");
        let m = &offer;
        assert_eq!(m[0], dhcp::OP_REPLY);
        assert_eq!(&m[16..20], &[0, 0, 0, 0], "a proxy offers no address");
        assert_eq!(&m[20..24], &[10, 0, 2, 15]);
        let file = "http://10.0.2.15:7447/pxe/boot.ipxe";
        assert_eq!(&m[108..108 + file.len()], file.as_bytes());
        let opts = &m[dhcp::FIXED + 4..];
        assert!(opts.windows(11).any(|w| w == b"\x3c\x09PXEClient"));
        assert!(opts.windows(6).any(|w| w == [97, 4, 0, 1, 2, 3]));
        assert!(opts.windows(3).any(|w| w == [53, 1, dhcp::OFFER]));
        // The proxy port acknowledges requests; port 67 leaves them to the DHCP server.
        let ack = answer(&client(dhcp::REQUEST, &ipxe), true, &f).unwrap();
        assert!(ack[dhcp::FIXED + 4..]
            .windows(3)
            .any(|w| w == [53, 1, dhcp::ACK]));
        assert!(answer(&client(dhcp::REQUEST, &ipxe), false, &f).is_none());
        // Plain DHCP clients get nothing; PXE firmware without iPXE gets the chain
        // loader for its architecture over TFTP, if there is one.
        assert!(answer(&client(dhcp::DISCOVER, &[]), false, &f).is_none());
        let uefi: [(u8, &[u8]); 2] = [(60, b"PXEClient:Arch:00007:UNDI:003016"), (93, &[0, 7])];
        let offer = answer(&client(dhcp::DISCOVER, &uefi), false, &f).unwrap();
        assert_eq!(&offer[108..120], b"snponly.efi\0");
        assert!(offer.windows(11).any(|w| w == b"\x42\x0910.0.2.15"));
        let bios: [(u8, &[u8]); 2] = [(60, b"PXEClient:Arch:00000:UNDI:002001"), (93, &[0, 0])];
        assert!(
            answer(&client(dhcp::DISCOVER, &bios), false, &f).is_none(),
            "no undionly.kpxe in this test's files"
        );
        let arm: [(u8, &[u8]); 2] = [(60, b"PXEClient:Arch:00011:UNDI:003000"), (93, &[0, 11])];
        assert!(answer(&client(dhcp::DISCOVER, &arm), false, &f).is_none());
        assert!(answer(b"garbage", false, &f).is_none());
    }

    #[test]
    fn the_script_boots_the_installer_from_this_node() {
        let f = files();
        let s = f.script();
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("kernel http://10.0.2.15:7447/pxe/vmlinuz initrd=initrd.img strata.mode=install strata.medium=http://10.0.2.15:7447/pxe "));
        assert!(s.contains("initrd http://10.0.2.15:7447/pxe/initrd.img\n"));
        assert!(f.sums.contains(&format!(
            "{}  boot/vmlinuz\n",
            hex::encode(Sha256::digest(b"kernel"))
        )));
    }
}

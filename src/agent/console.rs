//! VM serial consoles across the cluster: a console is read on the node that runs the VM,
//! locally or through the `agent` transport class from any other node.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::store::tables::Nodes;
use crate::cluster::store::Store;
use crate::compute::Hypervisor;
use crate::control::ConsoleReader;
use crate::ids::{NodeId, VmId};
use crate::transport::{read_frame, write_frame, Class, Peer, Service, Transport};

/// The most console output one request returns.
pub const MAX_TAIL: u64 = 1 << 20;
/// The most console input one request carries.
pub const MAX_INPUT: usize = 4096;

#[derive(Serialize, Deserialize, Debug)]
pub enum AgentRequest {
    /// The last `bytes` bytes of a VM's console, from `offset` if set (for following).
    ConsoleTail {
        vm: VmId,
        bytes: u64,
        offset: Option<u64>,
    },
    /// Types bytes into a VM's serial console.
    ConsoleInput {
        vm: VmId,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub enum AgentResponse {
    /// Console bytes and the offset just past them.
    Console(Result<(Vec<u8>, u64), String>),
    Typed(Result<(), String>),
    Error(String),
}

/// Reads the end of a file (or from `offset`), at most `bytes` bytes; returns the bytes and
/// the offset after them. A missing file is empty: the VM has not printed anything yet.
pub fn tail_file(path: &Path, bytes: u64, offset: Option<u64>) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let bytes = bytes.min(MAX_TAIL);
    let start = match offset {
        Some(o) if o <= len => o,
        // The file was truncated (a new boot): start over.
        Some(_) => 0,
        None => len.saturating_sub(bytes),
    };
    f.seek(SeekFrom::Start(start))?;
    let mut out = Vec::new();
    f.take(bytes).read_to_end(&mut out)?;
    let end = start + out.len() as u64;
    Ok((out, end))
}

/// Serves console reads for the VMs of this node.
pub struct AgentService {
    pub driver: Arc<dyn Hypervisor>,
}

#[async_trait::async_trait]
impl Service for AgentService {
    async fn handle_stream(
        &self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let resp = match read_frame::<AgentRequest>(&mut recv, 64 << 10).await {
            Ok(AgentRequest::ConsoleTail { vm, bytes, offset }) => AgentResponse::Console(
                tail_file(&self.driver.console_log(&vm), bytes, offset)
                    .map_err(|e| format!("console of VM {vm}: {e}")),
            ),
            Ok(AgentRequest::ConsoleInput { vm, data }) => AgentResponse::Typed(
                self.driver
                    .console_input(&vm, &data)
                    .await
                    .map_err(|e| crate::telemetry::error_chain(&e)),
            ),
            Err(e) => {
                tracing::warn!(peer = ?peer.node, error = %e, "bad agent request");
                AgentResponse::Error(e.to_string())
            }
        };
        if write_frame(&mut send, &resp).await.is_ok() {
            let _ = send.finish();
        }
    }
}

/// Console reads for `control`: local when the VM runs here, remote otherwise.
pub struct Consoles {
    pub me: NodeId,
    pub driver: Arc<dyn Hypervisor>,
    pub transport: Arc<Transport>,
    pub store: Store,
}

#[async_trait::async_trait]
impl ConsoleReader for Consoles {
    async fn tail(
        &self,
        node: NodeId,
        vm: &VmId,
        bytes: u64,
        offset: Option<u64>,
    ) -> Result<(Vec<u8>, u64), String> {
        if node == self.me {
            return tail_file(&self.driver.console_log(vm), bytes, offset)
                .map_err(|e| format!("console of VM {vm}: {e}"));
        }
        let req = AgentRequest::ConsoleTail {
            vm: vm.clone(),
            bytes,
            offset,
        };
        match self.call(node, vm, &req).await? {
            AgentResponse::Console(r) => r,
            AgentResponse::Error(e) => Err(format!("node {node}: {e}")),
            other => Err(format!("node {node}: unexpected answer {other:?}")),
        }
    }

    async fn input(&self, node: NodeId, vm: &VmId, data: &[u8]) -> Result<(), String> {
        if data.len() > MAX_INPUT {
            return Err(format!(
                "at most {MAX_INPUT} bytes of console input at a time"
            ));
        }
        if node == self.me {
            return self
                .driver
                .console_input(vm, data)
                .await
                .map_err(|e| crate::telemetry::error_chain(&e));
        }
        let req = AgentRequest::ConsoleInput {
            vm: vm.clone(),
            data: data.to_vec(),
        };
        match self.call(node, vm, &req).await? {
            AgentResponse::Typed(r) => r,
            AgentResponse::Error(e) => Err(format!("node {node}: {e}")),
            other => Err(format!("node {node}: unexpected answer {other:?}")),
        }
    }
}

impl Consoles {
    async fn call(
        &self,
        node: NodeId,
        vm: &VmId,
        req: &AgentRequest,
    ) -> Result<AgentResponse, String> {
        let addr = self
            .store
            .get::<Nodes>(&node.to_string())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("node {node} is not in the cluster"))?
            .value
            .addr;
        self.transport
            .call::<_, AgentResponse>(
                node,
                addr,
                Class::Agent,
                "console",
                req,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot reach node {node}, which runs VM {vm}: {}",
                    crate::telemetry::error_chain(&e)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_the_end_then_follows_from_an_offset() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        assert_eq!(tail_file(&p, 10, None).unwrap(), (vec![], 0));
        std::fs::write(&p, b"0123456789abcdef").unwrap();
        let (b, end) = tail_file(&p, 4, None).unwrap();
        assert_eq!((b.as_slice(), end), (&b"cdef"[..], 16));
        std::fs::write(&p, b"0123456789abcdefXYZ").unwrap();
        let (b, end) = tail_file(&p, 100, Some(16)).unwrap();
        assert_eq!((b.as_slice(), end), (&b"XYZ"[..], 19));
        // Truncated by a new boot: start over from the beginning.
        std::fs::write(&p, b"new").unwrap();
        let (b, _) = tail_file(&p, 100, Some(19)).unwrap();
        assert_eq!(b, b"new");
    }
}

//! A minimal QMP (QEMU Machine Protocol) client: JSON lines over a Unix socket.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub struct Qmp {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, String> {
        let fut = async {
            let s = UnixStream::connect(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let (r, w) = s.into_split();
            let mut q = Qmp {
                reader: BufReader::new(r),
                writer: w,
            };
            q.read_line().await?; // greeting
            q.execute("qmp_capabilities", None).await?;
            Ok(q)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("QMP at {} did not answer", path.display()))?
    }

    async fn read_line(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("QMP connection closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("bad QMP message: {e}"))
    }

    /// Runs a command and returns its `return` value, skipping interleaved events.
    pub async fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, String> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.reply().await
    }

    /// Runs a command that takes a descriptor (`getfd`, `add-fd`): `fd` travels with the
    /// command's bytes as SCM_RIGHTS, as QEMU expects.
    pub async fn execute_with_fd(
        &mut self,
        cmd: &str,
        args: Option<Value>,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Value, String> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        let bytes = text.as_bytes();
        let sent = loop {
            self.writer
                .as_ref()
                .writable()
                .await
                .map_err(|e| e.to_string())?;
            let fds = [fd];
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut anc = SendAncillaryBuffer::new(&mut space);
            if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err("cannot attach the descriptor".into());
            }
            match rustix::net::sendmsg(
                self.writer.as_ref(),
                &[std::io::IoSlice::new(bytes)],
                &mut anc,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(e) => return Err(format!("cannot send {cmd}: {e}")),
            }
        };
        // The rest of the line, if the socket took only part of it (the descriptor went
        // with the first byte).
        self.writer
            .write_all(&bytes[sent..])
            .await
            .map_err(|e| e.to_string())?;
        self.reply().await
    }

    /// The answer to the command just sent: its `return` value, skipping events.
    async fn reply(&mut self) -> Result<Value, String> {
        loop {
            let v = self.read_line().await?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(e["desc"].as_str().unwrap_or("QMP error").to_string());
            }
        }
    }

    /// Adds a device; if QEMU refuses it, runs `undo` (which removes the device's
    /// backend) and returns the refusal.
    pub async fn device_add_or_undo(
        &mut self,
        dev: Value,
        undo: (&str, Value),
    ) -> Result<(), String> {
        if let Err(e) = self.execute("device_add", Some(dev)).await {
            let _ = self.execute(undo.0, Some(undo.1)).await;
            return Err(e);
        }
        Ok(())
    }

    /// Asks the guest to release device `id` (ACPI hot-unplug); one gone already is fine.
    pub async fn device_del(&mut self, id: &str) -> Result<(), String> {
        match self.execute("device_del", Some(json!({ "id": id }))).await {
            Err(e) if !e.contains("not found") => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits for the next asynchronous event.
    pub async fn next_event(&mut self) -> Result<Value, String> {
        loop {
            let v = self.read_line().await?;
            if v.get("event").is_some() {
                return Ok(v);
            }
        }
    }
}

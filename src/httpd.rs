//! Every HTTP listener of a node (OpenStack API and console, metadata service, network
//! install files, metrics) is served here, with limits so that no client can exhaust
//! the node: a cap on open connections per listener and per client address (a
//! connection over either is closed at once), a deadline for the TLS handshake and for
//! each request's headers (slow clients), and an idle timeout that closes connections
//! on which nothing moved. Depends on no other Strata module.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub per_source: usize,
    /// Time for a TLS handshake and for each request's headers (counted from when the
    /// connection waits for the next request: it also bounds keep-alive idleness).
    pub header_timeout: Duration,
    /// A connection on which nothing was read or written for this long is closed.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The OpenStack API and web console (one listener, many clients, long polls). The
    /// header deadline also closes a keep-alive connection idle between requests, so it
    /// is hyper's usual 30 s: clients that pool connections rarely meet a closed one.
    pub const API: Limits = Limits {
        max_connections: 8_192,
        per_source: 6_000,
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(120),
    };
    /// The metadata service, which guests reach.
    pub const GUEST: Limits = Limits {
        max_connections: 1_024,
        per_source: 64,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
    };
    /// Network install files and metrics: few clients.
    pub const SMALL: Limits = Limits {
        max_connections: 256,
        per_source: 32,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };
}

/// Open connections of one listener, in all and by client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A slot among a listener's open connections, given back when dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    source: IpAddr,
}

impl Slot {
    fn take(open: &Arc<Mutex<Open>>, source: IpAddr, limits: &Limits) -> Option<Slot> {
        let mut o = open.lock().ok()?;
        let mine = o.by_source.get(&source).copied().unwrap_or(0);
        if o.total >= limits.max_connections || mine >= limits.per_source {
            return None;
        }
        o.total += 1;
        *o.by_source.entry(source).or_default() += 1;
        Some(Slot {
            open: open.clone(),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut o) = self.open.lock() {
            o.total = o.total.saturating_sub(1);
            if let Some(n) = o.by_source.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    o.by_source.remove(&self.source);
                }
            }
        }
    }
}

/// A stream that notes when bytes last moved, for the idle timeout.
struct Watched<S> {
    inner: S,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<S> Watched<S> {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) within `limits`, until the
/// task is dropped. Handlers see the client's address as `ConnectInfo<SocketAddr>`.
/// `name` names the listener in logs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    name: &'static str,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&open, peer.ip(), &limits) else {
            if refused_logged.elapsed() > Duration::from_secs(10) {
                tracing::warn!(listener = name, %peer, "connection limit reached; connections closed at once");
                refused_logged = Instant::now();
            }
            drop(tcp);
            continue;
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let last = Arc::new(AtomicU64::new(0));
            let stream = Watched {
                inner: tcp,
                last: last.clone(),
                start: Instant::now(),
            };
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => serve_connection(s, app, &limits, &last, peer, name).await,
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out")
                        }
                    }
                }
                None => serve_connection(stream, app, &limits, &last, peer, name).await,
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    app: Router,
    limits: &Limits,
    last: &AtomicU64,
    peer: SocketAddr,
    name: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let mut tick = tokio::time::interval(idle / 4);
    tick.tick().await;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = name, %peer, error = %e, "connection ended");
                }
                return;
            }
            _ = tick.tick() => {
                let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    tracing::debug!(listener = name, %peer, "idle connection closed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(serve(l, app, None, limits, "test"));
        addr
    }

    async fn get(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_idle_ones_time_out() {
        let limits = Limits {
            max_connections: 4,
            per_source: 3,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(400),
        };
        let addr = start(limits).await;
        // Three idle connections fill this address's share: a fourth is closed at once.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = get(addr).await;
        assert!(
            refused.is_empty(),
            "served over the per-source cap: {refused}"
        );
        // Silent clients are dropped after the header deadline; then requests go through.
        tokio::time::sleep(Duration::from_millis(700)).await;
        for s in &mut idle {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b))
                .await
                .expect("an idle connection was kept open")
                .unwrap_or(0);
            assert_eq!(n, 0, "an idle connection got data");
        }
        let ok = get(addr).await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"),
            "{ok}"
        );
    }
}

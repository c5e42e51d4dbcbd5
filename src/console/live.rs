//! Live pages: a server-sent event stream that ticks when the cluster's state changes
//! (pages then refetch their live parts), and the serial console over a websocket.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::{SinkExt, Stream, StreamExt};

use super::session::Ctx;
use super::{Failure, Web};

pub fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/live", get(live))
        .route("/instances/{id}/console/ws", any(console_ws))
}

/// Forwards store changes to live pages, at most one tick per 500 ms.
pub fn spawn_change_ticker(web: Arc<Web>) {
    let mut rx = web.control.store.watch();
    let tx = web.changes.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Everything that came in meanwhile is covered by this tick.
            while rx.try_recv().is_ok() {}
            let _ = tx.send(());
        }
    });
}

async fn live(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = web.changes.subscribe();
    let web2 = web.clone();
    let sid = ctx.sid.clone();
    let stream = futures::stream::unfold(rx, move |mut rx| {
        let web = web2.clone();
        let sid = sid.clone();
        async move {
            match rx.recv().await {
                Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // A session that ended (signed out or expired) gets no more ticks.
                    if web.sessions.get(&sid, web.idle, false).is_err() {
                        return Some((Ok(Event::default().event("expired").data("1")), rx));
                    }
                    Some((Ok(Event::default().event("change").data("1")), rx))
                }
                Err(_) => None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// How much earlier output a new viewer is sent.
const BACKLOG: u64 = 64 << 10;

async fn console_ws(
    State(web): State<Arc<Web>>,
    ctx: Ctx,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let vm = match web.control.vm(&id) {
        Ok(v) if ctx.owns(v.record.project.as_deref()) => v,
        _ => {
            return Failure(
                StatusCode::NOT_FOUND,
                format!("No instance {id} in this project."),
            )
            .into_response()
        }
    };
    let id = vm.record.id.0.clone();
    web.audit(&ctx, "instance.console", &vm.record.name, None)
        .await;
    ws.on_upgrade(move |sock| relay(web, ctx, id, sock))
}

/// Sends the console's output as it grows; types what the viewer types (members and
/// admins only: a reader's console is read-only).
async fn relay(web: Arc<Web>, ctx: Ctx, id: String, sock: WebSocket) {
    let (mut tx, mut rx) = sock.split();
    let mut offset: Option<u64> = None;
    let mut first = true;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // The viewer's rights are read again every 2 s: a role taken away, a disabled user or
    // a project left ends typing or the stream, as on every other page.
    let mut writer = ctx.writer;
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let want = if first { BACKLOG } else { crate::agent::console::MAX_TAIL };
                match web.control.vm_console(&id, want, offset).await {
                    Ok((bytes, end)) => {
                        first = false;
                        offset = Some(end);
                        if !bytes.is_empty() && tx.send(Message::Binary(bytes.into())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let msg = format!("\r\n[console unavailable: {}]\r\n", crate::telemetry::error_chain(&e));
                        let _ = tx.send(Message::Text(msg.into())).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
                if web.sessions.get(&ctx.sid, web.idle, false).is_err() {
                    let _ = tx.send(Message::Text("\r\n[session ended]\r\n".into())).await;
                    let _ = tx.send(Message::Close(None)).await;
                    return;
                }
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(10) {
                    match web.control.principal(&ctx.user_id, &ctx.project_id) {
                        Ok(info) => {
                            writer = crate::control::users::is_cloud_admin(&info)
                                || crate::control::users::effective_roles(&info)
                                    .iter()
                                    .any(|r| r == "member");
                        }
                        Err(_) => {
                            let _ = tx.send(Message::Text("\r\n[access ended]\r\n".into())).await;
                            let _ = tx.send(Message::Close(None)).await;
                            return;
                        }
                    }
                }
            }
            m = rx.next() => {
                let data: Vec<u8> = match m {
                    Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(_)) => continue,
                    _ => return,
                };
                if !writer {
                    let _ = tx.send(Message::Text("\r\n[read-only: your role is reader]\r\n".into())).await;
                    continue;
                }
                if let Err(e) = web.control.vm_console_write(&id, &data).await {
                    let msg = format!("\r\n[typing failed: {}]\r\n", crate::telemetry::error_chain(&e));
                    let _ = tx.send(Message::Text(msg.into())).await;
                }
            }
        }
    }
}

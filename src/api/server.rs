//! The accept loop: a cap on connections and on handshakes in progress, the PROXY header
//! of trusted balancers, TLS (see `tls`), and per connection the verified identity,
//! HTTP/2 keep-alive, an idle timeout and a body-read deadline.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::auth::{ConnInfo, identity_of};
use super::proxy;
use super::tls::Tls;
use crate::config::{Limits, ServerSettings};

/// Accepts connections until `shutdown` completes.
///
/// At most `server.max_connections` are served at once: past the cap the loop stops
/// accepting, so new connections wait in the kernel's listen backlog until one closes.
/// At most `server.max_handshakes` PROXY headers and TLS handshakes run at once; the
/// wait for a slot counts against `limits.tls_handshake_timeout_ms`.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    app: Router,
    server: ServerSettings,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let tls = Arc::new(tls);
    let reload = tls.spawn_reload();
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let handshakes = Arc::new(Semaphore::new(server.max_handshakes));
    let server = Arc::new(server);
    let handshake_timeout = Duration::from_millis(limits.tls_handshake_timeout_ms);
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_within(&listener, &connections) => accepted,
        };
        let Some((tcp, peer, slot)) = accepted else {
            continue;
        };
        let (tls, app, server, handshakes) = (
            Arc::clone(&tls),
            app.clone(),
            Arc::clone(&server),
            Arc::clone(&handshakes),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let opened = tokio::time::timeout(
                handshake_timeout,
                open(tcp, peer, &tls, &server, &handshakes),
            )
            .await;
            let (stream, info) = match opened {
                Ok(Some(opened)) => opened,
                Ok(None) | Err(_) => {
                    metrics::counter!("tokenvault_tls_handshake_failures_total").increment(1);
                    return;
                }
            };
            serve_connection(stream, info, app, &server, header_timeout).await;
        });
    }
    if let Some(reload) = reload {
        reload.abort();
    }
}

/// The next connection, once a connection slot is free.
async fn accept_within(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let slot = Arc::clone(connections).acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((tcp, peer)) => Some((tcp, peer, slot)),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

type Tls13 = tokio_rustls::server::TlsStream<TcpStream>;

/// The PROXY header (from a trusted balancer) and the TLS handshake; the verified
/// identity, or why there is none, in the connection's info.
async fn open(
    mut tcp: TcpStream,
    peer: SocketAddr,
    tls: &Tls,
    server: &ServerSettings,
    handshakes: &Arc<Semaphore>,
) -> Option<(Tls13, ConnInfo)> {
    let _turn = Arc::clone(handshakes).acquire_owned().await.ok()?;
    let origin = if proxy::trusted(&server.proxy_protocol.trusted, peer.ip()) {
        match proxy::read_v2(&mut tcp, peer).await {
            Ok(origin) => origin,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "PROXY header refused");
                return None;
            }
        }
    } else {
        peer
    };
    let stream = match tls.acceptor().accept(tcp).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, %origin, error = %e, "TLS handshake refused");
            return None;
        }
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first());
    let thumbprint = leaf.map(|cert| crate::session::thumbprint(cert));
    let identity = match leaf {
        Some(cert) => identity_of(cert, server)
            .inspect_err(|e| {
                tracing::warn!(%origin, reason = %e, "client certificate names no identity; requests answer 401");
            })
            .ok(),
        None => None,
    };
    Some((
        stream,
        ConnInfo {
            identity,
            peer: origin,
            thumbprint,
        },
    ))
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has had no request open (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(
    tls: Tls13,
    info: ConnInfo,
    app: Router,
    server: &ServerSettings,
    header_timeout: Duration,
) {
    let activity = Arc::new(Activity {
        start: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
    });
    let body_timeout = Duration::from_millis(server.body_read_timeout_ms);
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let in_flight = InFlight::new(&activity);
            req.extensions_mut().insert(info.clone());
            let req = req.map(|body| axum::body::Body::new(Deadline::new(body, body_timeout)));
            let answer = app.clone().oneshot(req);
            async move {
                let response = answer.await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_millis(server.http2_keep_alive_interval_ms))
        .keep_alive_timeout(Duration::from_millis(server.http2_keep_alive_timeout_ms));
    let idle_timeout = Duration::from_millis(server.idle_timeout_ms);
    // After GOAWAY, HTTP/2 waits for the client to answer a PING; one that does not
    // within the keep-alive timeout is dropped (once no request is open).
    let grace = Duration::from_millis(server.http2_keep_alive_timeout_ms);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let wait = match closing {
            None => idle_timeout.saturating_sub(activity.idle_for()),
            Some(since) => (since + grace).saturating_duration_since(tokio::time::Instant::now()),
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => match closing {
                None if activity.idle_for() >= idle_timeout => {
                    // HTTP/2: GOAWAY, then close; HTTP/1: close between requests.
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now());
                }
                None => {}
                Some(_) if activity.in_flight.load(Ordering::Relaxed) == 0 => break,
                // A request started after the GOAWAY: give it another grace period.
                Some(_) => closing = Some(tokio::time::Instant::now()),
            },
        }
    }
}

/// A request body that fails once `server.body_read_timeout_ms` has passed since the
/// request's headers arrived, so a client trickling its body cannot hold a request (and
/// its connection slot) open; the handler answers 400.
struct Deadline {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Incoming, within: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body was not complete within server.body_read_timeout_ms")]
struct BodyTimedOut;

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(axum::BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Binds the listen address (port 0 picks a free port).
pub async fn bind(listen: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

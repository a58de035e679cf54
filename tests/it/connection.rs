//! Issue 14, item 6 (review findings L9, L14), the connection level: PROXY protocol v2
//! from trusted balancers only, a cap on connections, a body-read deadline, and idle
//! HTTP/2 connections closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::helpers::{self, client_tls_alpn, pki, spawn_with};

/// A PROXY v2 header (PROXY command, TCP) naming `source` as the client.
fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let header = proxy_header::ProxyHeader::with_address(proxy_header::ProxiedAddress::stream(
        source,
        destination,
    ));
    let mut buf = Vec::new();
    header.encode_v2(&mut buf).unwrap();
    buf
}

/// TLS as `app` over `tcp` (after whatever the caller already wrote), offering `alpn`.
async fn tls_over(tcp: TcpStream, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
    let config = client_tls_alpn(&pki().clients["app"], alpn);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// One HTTP/1.1 tokenize on `tls`; the status line, or the error.
async fn raw_tokenize(mut tls: TlsStream<TcpStream>) -> Result<String, String> {
    let body = json!({"type": "card", "value": "4111111111111111"}).to_string();
    let req = format!(
        "POST /v1/tokenize HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    read.map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// The origins of the audit events of `tokenize`.
async fn tokenize_origins(app: &helpers::TestApp) -> Vec<String> {
    let mut db = app.db().await;
    sqlx::query_scalar("SELECT origin FROM audit_events WHERE action = 'tokenize'")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_trusted_balancers_proxy_header_names_the_audit_origin() {
    let app = spawn_with("proxy", |s, _| {
        s.server.proxy_protocol.trusted = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let client: SocketAddr = "203.0.113.7:40001".parse().unwrap();
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(&proxy_v2(client, app.addr)).await.unwrap();
    let tls = tls_over(tcp, &[b"http/1.1"])
        .await
        .expect("TLS after the header");
    assert_eq!(raw_tokenize(tls).await.unwrap(), "HTTP/1.1 200 OK");
    assert_eq!(tokenize_origins(&app).await, vec!["203.0.113.7".to_owned()]);
    // From the trusted peer, a connection without the header is refused.
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let plain = match tls_over(tcp, &[b"http/1.1"]).await {
        Ok(tls) => raw_tokenize(tls).await,
        Err(e) => Err(e.to_string()),
    };
    assert!(
        plain.is_err(),
        "a trusted peer without a PROXY header was served: {plain:?}"
    );
    assert_eq!(tokenize_origins(&app).await.len(), 1);
}

#[tokio::test]
async fn an_untrusted_peers_proxy_header_is_never_read() {
    let app = spawn_with("proxy-untrusted", |s, _| {
        s.server.proxy_protocol.trusted = vec!["10.0.0.5/32".parse().unwrap()];
    })
    .await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(&proxy_v2("203.0.113.7:40001".parse().unwrap(), app.addr))
        .await
        .unwrap();
    let spoofed = match tls_over(tcp, &[b"http/1.1"]).await {
        Ok(tls) => raw_tokenize(tls).await,
        Err(e) => Err(e.to_string()),
    };
    assert!(
        spoofed.is_err(),
        "an untrusted peer's header was honoured: {spoofed:?}"
    );
    // Direct clients are served, and their origin is the TCP peer.
    app.tokenize("card", "4111111111111111").await;
    assert_eq!(tokenize_origins(&app).await, vec!["127.0.0.1".to_owned()]);
}

#[tokio::test]
async fn connections_past_the_cap_are_not_served_until_one_closes() {
    let app = spawn_with("conn-cap", |s, _| s.server.max_connections = 2).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(app.addr).await.unwrap();
        open.push(tls_over(tcp, &[b"http/1.1"]).await.unwrap());
    }
    let third = async {
        let tcp = TcpStream::connect(app.addr).await.unwrap();
        tls_over(tcp, &[b"http/1.1"]).await
    };
    let waited = tokio::time::timeout(Duration::from_secs(2), third).await;
    assert!(
        waited.is_err(),
        "a third connection was served while two were open"
    );
    drop(open.pop());
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        raw_tokenize(tls_over(tcp, &[b"http/1.1"]).await.unwrap()).await
    })
    .await;
    assert_eq!(
        served.expect("served after one closed").unwrap(),
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test]
async fn a_body_trickled_past_the_deadline_is_cut_off() {
    let app = spawn_with("slow-body", |s, _| s.server.body_read_timeout_ms = 500).await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut tls = tls_over(tcp, &[b"http/1.1"]).await.unwrap();
    tls.write_all(
        b"POST /v1/tokenize HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"type\"",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    // One byte a second: never idle for long, never done.
    let (mut rd, mut wr) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if wr.write_all(b" ").await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), rd.read_to_end(&mut out)).await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "the trickling request was still open after 6 s"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_with_goaway() {
    let app = spawn_with("h2-idle", |s, _| {
        s.server.idle_timeout_ms = 500;
        // This client never answers the PING that follows the GOAWAY.
        s.server.http2_keep_alive_timeout_ms = 1000;
    })
    .await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut tls = tls_over(tcp, &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface and an empty SETTINGS frame; then nothing.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the idle HTTP/2 connection was still open after 5 s"
    );
    // Walk the frames the server sent: one of them is GOAWAY (type 7).
    let (mut at, mut types) = (0, Vec::new());
    while at + 9 <= out.len() {
        let len =
            usize::from(out[at]) << 16 | usize::from(out[at + 1]) << 8 | usize::from(out[at + 2]);
        types.push(out[at + 3]);
        at += 9 + len;
    }
    assert!(types.contains(&7), "no GOAWAY among frame types {types:?}");
}

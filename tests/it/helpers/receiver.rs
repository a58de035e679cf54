//! A real HTTPS webhook receiver on a random local port (the test PKI's server
//! certificate, so it is `https://localhost:<port>`): it keeps what it received and can be
//! told to fail or to hang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

#[derive(Default)]
pub struct Received {
    /// (headers, body) in arrival order, failed tries included.
    pub posts: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
    /// Answer 500 to this many next posts.
    pub fail_next: AtomicU32,
    /// Never answer.
    pub hang: AtomicBool,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Received>,
}

impl Receiver {
    pub fn url(&self) -> String {
        format!("https://localhost:{}/hook", self.addr.port())
    }

    pub fn posts(&self) -> Vec<(HeaderMap, Vec<u8>)> {
        self.got.posts.lock().unwrap().clone()
    }
}

pub async fn spawn_receiver() -> Receiver {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let p = super::pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(p.server.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_slice(p.server.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Received::default());
    let state = got.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let got = state.clone();
            async move {
                got.posts.lock().unwrap().push((headers, body.to_vec()));
                if got.hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let failing = got
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    Receiver { addr, got }
}

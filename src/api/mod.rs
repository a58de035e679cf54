//! The HTTPS API: axum behind rustls with mutual TLS. Each resource file exposes its
//! routes; `app` merges them and adds the cross-cutting layer (metrics, logs by matched
//! route — never the raw URI, which may hold a token — and `Cache-Control: no-store`).

pub mod auth;
pub mod crypto;
pub mod error;
mod health;
pub mod json;
mod keys;
mod limits;
mod openapi;
mod proxy;
pub mod server;
mod tls;
pub mod tokens;
pub mod vault;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::audit::{Action, AuditEvent, Outcome};
use crate::config::Settings;
use crate::error::Error;
use crate::keys::HsmStatus;
use crate::vault::{Services, Vault, now_ms};

/// Shared state of every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub vault: Vault,
    /// The guard and the services every handler calls; built once.
    pub services: Services,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(vault: Vault) -> Self {
        Self {
            services: vault.services(),
            metrics: metrics_handle(),
            vault,
        }
    }
}

/// How often the recorder's upkeep moves recorded histogram samples into their summaries.
/// Without it every sample stays queued until the next `/metrics` scrape, so a vault that
/// nobody scrapes grows by every request it serves.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The process-wide Prometheus recorder (installed once; tests run several servers),
/// with its upkeep running on a thread of its own for the life of the process.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist already (embedding); then ours just stays empty.
            if metrics::set_global_recorder(recorder).is_ok() {
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(METRICS_UPKEEP_EVERY);
                            upkeep.run_upkeep();
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start the metrics upkeep thread");
                }
            }
            handle
        })
        .clone()
}

/// The router with every route and layer; no socket (tests may call it directly).
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(tokens::router())
        .merge(crypto::router())
        .merge(keys::router())
        .merge(health::router())
        .merge(openapi::router())
        .merge(vault::router(&state.vault.settings))
        .fallback(|state: State<AppState>, uri: Uri| async move {
            vault::error_for(&state.vault.settings, uri.path(), Error::NoRoute)
        })
        .method_not_allowed_fallback(|state: State<AppState>, uri: Uri| async move {
            vault::error_for(&state.vault.settings, uri.path(), Error::MethodNotAllowed)
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::rate_limit,
        ))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Metrics and a log line per request, by matched route; `no-store` on every response.
async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let start = Instant::now();
    let mut resp = next.run(req).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    metrics::counter!("tokenvault_requests_total", "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("tokenvault_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
    tracing::debug!(%method, route, status, micros = elapsed.as_micros() as u64, "request");
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A bound, ready server: keys loaded, listener open.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    tls: tls::Tls,
    state: AppState,
}

impl Server {
    /// Opens the vault, loads every active key (so requests make no HSM call), binds.
    pub async fn bind(settings: Settings) -> anyhow::Result<Self> {
        // Like the PIN file: a key others may read is refused (a missing one is reported
        // by `tls_config`, with what to run).
        let key = &settings.server.tls_key;
        if key.exists() {
            crate::secret_file::check_private_mode(key)
                .map_err(|e| anyhow::anyhow!("the server TLS key {}: {e}", key.display()))?;
        }
        let tls = tls::Tls::load(&settings.server)?;
        let vault = Vault::open(settings).await?;
        vault.keys.warm().await?;
        let (listener, addr) = server::bind(&vault.settings.server.listen).await?;
        let state = AppState::new(vault);
        let event = AuditEvent::new("system", Action::ServiceStart, Outcome::Success)
            .resource(format!("https://{addr}"))
            .reason(Some(format!("tokenvault {}", env!("CARGO_PKG_VERSION"))));
        state.services.guard.record(event, now_ms()).await?;
        state.vault.checkpointer().publish_key(now_ms()).await?;
        Ok(Self {
            listener,
            addr,
            tls,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes. Every 2 s it picks up key changes made elsewhere
    /// (rotation, retirement, destruction), rotates keys whose cryptoperiod ended, and
    /// signs an audit checkpoint when one is due. Every `hsm.health_interval_ms` it checks
    /// that the HSM answers, and reconnects when it did not (`keys::health`).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let watch = {
            let keys = self.state.vault.keys.clone();
            let every = Duration::from_millis(self.state.vault.settings.hsm.health_interval_ms);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let status = keys.watch_hsm(now_ms()).await;
                    let up = !matches!(status, HsmStatus::Down(_));
                    metrics::gauge!("tokenvault_hsm_up").set(if up { 1.0 } else { 0.0 });
                }
            })
        };
        let keys = self.state.vault.keys.clone();
        let signer = self.state.vault.checkpointer();
        let audit = self.state.vault.settings.audit.clone();
        let background = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if let Err(e) = keys.refresh().await {
                    tracing::warn!(error = %e, "could not refresh the active key versions");
                }
                // Cryptoperiods and usage limits: rotate what is due (once, across nodes).
                match keys.maintain(now_ms()).await {
                    Ok(rotated) => rotated
                        .iter()
                        .for_each(|r| tracing::info!(rotation = %r, "automatic rotation")),
                    Err(e) => tracing::warn!(error = %e, "automatic rotation check failed"),
                }
                let interval = audit.checkpoint_interval_secs * 1000;
                if let Err(e) = signer
                    .checkpoint_if_due(audit.checkpoint_every, interval, now_ms())
                    .await
                {
                    tracing::warn!(error = %e, "could not sign an audit checkpoint");
                }
            }
        });
        // Retention: expired tokens are deleted, and deletions made final in the files.
        let purge = {
            let tokens = self.state.services.tokens.clone();
            let sessions = self.state.services.sessions.clone();
            let every = self.state.vault.settings.retention.purge_interval_secs;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(every));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    match tokens.purge_expired("system", now_ms()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(purged = n, "expired tokens purged"),
                        Err(e) => tracing::warn!(error = %e, "could not purge expired tokens"),
                    }
                    // Sessions of the Vault-compatible API a day past their hard end.
                    if let Err(e) = sessions.purge(now_ms()).await {
                        tracing::warn!(error = %e, "could not purge ended sessions");
                    }
                }
            })
        };
        let limits = self.state.vault.settings.limits.clone();
        let settings = self.state.vault.settings.server.clone();
        let scorer = self.state.services.guard.anomaly().clone();
        let router = app(self.state);
        server::accept_loop(self.listener, self.tls, router, settings, limits, shutdown).await;
        purge.abort();
        background.abort();
        watch.abort();
        // A clean stop keeps everything the baselines learned since the last flush.
        if let Err(e) = scorer.flush(now_ms()).await {
            tracing::warn!(error = %e, "anomaly baselines not written at shutdown");
        }
    }
}

/// `tokenvault serve`: until SIGINT or SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let server = Server::bind(settings).await?;
    tracing::info!(addr = %server.local_addr(), "tokenvault listening (TLS 1.3, client certificates required)");
    server.run(shutdown_signal()).await;
    tracing::info!("tokenvault stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// The OpenAPI document of a vault with `settings`, as pretty JSON (`tokenvault openapi`).
pub fn openapi_json(settings: &Settings) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&openapi::document(settings))
}

/// JSON response helper for handlers.
pub(crate) fn ok<T: serde::Serialize>(body: T) -> Response {
    axum::Json(body).into_response()
}

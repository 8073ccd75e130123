//! The agent's HTTP endpoint: `/metrics` (Prometheus text format),
//! `/healthz` (the process is up) and `/readyz` (capture is attached), 404
//! for anything else.
//!
//! Input: [`MetricsEndpointSettings`] (address, optional bearer token,
//! optional rustls config) and the [`MetricsRegistry`]. Output: a running
//! server task and its [`MetricsServer`] handle, through which the run loop
//! flips readiness and stops it. Only `/metrics` needs the token: probes
//! carry no data and must work without secrets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::prometheus::MetricsRegistry;
use crate::config::MetricsEndpointSettings;

/// Connections served at once; more wait in the listen backlog, so a flood
/// of scrapers cannot grow the agent.
const MAX_CONNECTIONS: usize = 32;
/// A client has this long to finish its TLS handshake and request head.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listening socket failed (in use, no permission, ...).
    #[error("cannot listen on {addr} (LLMTAP_METRICS_ADDR, --metrics-addr): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A running endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    /// It serves TLS.
    tls: bool,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn spawn(
        settings: &MetricsEndpointSettings,
        registry: Arc<MetricsRegistry>,
    ) -> Result<Self, ServerError> {
        let listener =
            TcpListener::bind(settings.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: settings.addr,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: settings.addr,
            source,
        })?;
        let ready = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(State {
            registry,
            ready: ready.clone(),
            expected_auth: settings
                .bearer_token
                .as_ref()
                .map(|t| format!("Bearer {t}")),
        });
        let tls = settings.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let serves_tls = tls.is_some();
        let task = tokio::spawn(accept_loop(listener, state, tls, stopped));
        Ok(MetricsServer {
            local_addr,
            tls: serves_tls,
            ready,
            stop,
            task,
        })
    }

    /// Where it listens (the real port when the settings said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics URL, `https` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/metrics", self.local_addr)
    }

    /// `/readyz` answers 200 once this is set: call it when capture is
    /// attached.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct State {
    registry: Arc<MetricsRegistry>,
    ready: Arc<AtomicBool>,
    expected_auth: Option<String>,
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of fds and the like: back off instead of spinning.
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve(stream, state).await,
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
                None => serve(tcp, state).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "metrics endpoint connection: {e}");
            }
        });
    }
}

async fn serve<S>(stream: S, state: Arc<State>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(&state, &request)) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| e.to_string())
}

fn respond(state: &State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match request.uri().path() {
        "/metrics" => {
            if let Some(expected) = &state.expected_auth {
                let given = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                if !given.is_some_and(|given| constant_time_eq(given, expected.as_bytes())) {
                    let mut response =
                        plain(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                    return response;
                }
            }
            let mut response = Response::new(Full::new(Bytes::from(state.registry.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(TEXT_FORMAT),
            );
            response
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Relaxed) => plain(StatusCode::OK, "ready\n"),
        "/readyz" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "capture not attached yet\n",
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn registry() -> Arc<MetricsRegistry> {
        let r = MetricsRegistry::new(&crate::config::test_settings()).unwrap();
        r.health().events_read.inc_by(42);
        Arc::new(r)
    }

    fn settings(
        token: Option<&str>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> MetricsEndpointSettings {
        MetricsEndpointSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            bearer_token: token.map(str::to_owned),
            tls,
        }
    }

    /// One HTTP/1.1 request over any stream; returns (status, body).
    async fn get<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        path: &str,
        auth: Option<&str>,
    ) -> (u16, String) {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // A TLS peer may close without close_notify; what was read is enough.
        let _ = stream.read_to_end(&mut raw).await;
        let text = String::from_utf8(raw).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    async fn tcp(addr: SocketAddr) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(addr).await.unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_probes_and_404() {
        let server = MetricsServer::spawn(&settings(None, None), registry())
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_eq!(server.url(), format!("http://{addr}/metrics"));
        let (status, body) = get(tcp(addr).await, "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(body.contains("llmtap_events_read_total 42"), "{body}");
        assert_eq!(get(tcp(addr).await, "/healthz", None).await.0, 200);
        assert_eq!(get(tcp(addr).await, "/readyz", None).await.0, 503);
        server.set_ready(true);
        assert_eq!(get(tcp(addr).await, "/readyz", None).await.0, 200);
        assert_eq!(get(tcp(addr).await, "/", None).await.0, 404);
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn bearer_token_guards_metrics_only() {
        let server = MetricsServer::spawn(&settings(Some("s3cret"), None), registry())
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_eq!(get(tcp(addr).await, "/metrics", None).await.0, 401);
        assert_eq!(
            get(tcp(addr).await, "/metrics", Some("Bearer wrong!"))
                .await
                .0,
            401
        );
        assert_eq!(
            get(tcp(addr).await, "/metrics", Some("Basic s3cret"))
                .await
                .0,
            401
        );
        assert_eq!(
            get(tcp(addr).await, "/metrics", Some("Bearer s3cret"))
                .await
                .0,
            200
        );
        assert_eq!(get(tcp(addr).await, "/healthz", None).await.0, 200);
    }

    #[tokio::test]
    async fn serves_tls_with_the_given_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("llmtap-metrics-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        // Through the real settings path, as the agent builds it.
        let args = crate::config::test_args(&[
            "--metrics-addr",
            "127.0.0.1:0",
            "--metrics-bearer-token",
            "t",
            "--metrics-tls-cert",
            cert_path.to_str().unwrap(),
            "--metrics-tls-key",
            key_path.to_str().unwrap(),
        ]);
        let built = crate::config::ExportSettings::from_args(&args).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let server = MetricsServer::spawn(&built.metrics, registry())
            .await
            .unwrap();
        assert_eq!(
            server.url(),
            format!("https://{}/metrics", server.local_addr())
        );

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.cert.der().to_vec()))
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("localhost").unwrap();
        let stream = connector
            .connect(name.clone(), tcp(server.local_addr()).await)
            .await
            .unwrap();
        let (status, body) = get(stream, "/metrics", Some("Bearer t")).await;
        assert_eq!(status, 200);
        assert!(body.contains("llmtap_events_read_total 42"));
        let stream = connector
            .connect(name, tcp(server.local_addr()).await)
            .await
            .unwrap();
        assert_eq!(get(stream, "/metrics", None).await.0, 401);
        // Plain HTTP to the TLS port gets no metrics.
        let mut plain = tcp(server.local_addr()).await;
        plain
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = plain.read_to_end(&mut raw).await;
        assert!(!String::from_utf8_lossy(&raw).contains("llmtap_events_read_total"));
    }
}

//! A real OTLP trace receiver for tests, built from the OTLP protobuf
//! definitions (`opentelemetry-proto`): gRPC (`TraceService/Export`) and
//! HTTP/protobuf (`POST /v1/traces`) on loopback ports of their own. It keeps
//! every span it receives, with its resource, for assertions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
pub use opentelemetry_proto::tonic::trace::v1::{span::Event, span::SpanKind, Span};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One received span and the resource it came with.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub span: Span,
    /// `grpc` or `http`.
    pub via: &'static str,
}

impl ReceivedSpan {
    /// A span attribute's value.
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.span.attributes, key)
    }

    /// A resource attribute's value.
    pub fn resource_attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.resource, key)
    }

    pub fn str_attr(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    pub fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

type Store = Arc<Mutex<Vec<ReceivedSpan>>>;

fn keep(store: &Store, request: ExportTraceServiceRequest, via: &'static str) {
    let mut spans = store.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    resource: resource.clone(),
                    span,
                    via,
                });
            }
        }
    }
}

struct Grpc(Store);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The running receiver; stops when dropped.
pub struct OtlpReceiver {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    store: Store,
    tasks: Vec<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Listens on two free loopback ports (call inside a tokio runtime).
    pub async fn start() -> Self {
        let store = Store::default();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let grpc_task = tokio::spawn({
            let service = TraceServiceServer::new(Grpc(store.clone()));
            async move {
                let incoming = tonic::transport::server::TcpIncoming::from(grpc);
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await;
            }
        });
        let http_task = tokio::spawn(serve_http(http, store.clone()));
        OtlpReceiver {
            grpc_addr,
            http_addr,
            store,
            tasks: vec![grpc_task, http_task],
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Base URL; exporters append `/v1/traces`.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().unwrap().clone()
    }

    /// Waits until at least `count` spans arrived (or `timeout` passed) and
    /// returns what arrived.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        while self.store.lock().unwrap().len() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.spans()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_http(listener: TcpListener, store: Store) {
    while let Ok((tcp, _)) = listener.accept().await {
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move {
                    let path_ok = request.uri().path() == "/v1/traces";
                    let body = request.into_body().collect().await.map(|b| b.to_bytes());
                    let status = match body.ok().map(ExportTraceServiceRequest::decode) {
                        Some(Ok(decoded)) if path_ok => {
                            keep(&store, decoded, "http");
                            200
                        }
                        Some(Ok(_)) => 404,
                        _ => 400,
                    };
                    let reply = ExportTraceServiceResponse::default().encode_to_vec();
                    let mut response = hyper::Response::new(Full::new(Bytes::from(reply)));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    response.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("application/x-protobuf"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

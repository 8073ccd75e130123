//! Export settings: the seed's variables, the standard `OTEL_*` ones and the
//! agent's own, each a `clap` flag with an environment variable.
//!
//! Input: [`ExportArgs`], exactly what was typed (strings, so every bad
//! value gets the same one-line error naming the setting). Output:
//! [`ExportSettings`], validated and ready to build the exporters from, or a
//! [`ConfigError`].
//!
//! `JAEGER_ENDPOINT` is honoured for the seed's `.env` files. Jaeger (1.35+)
//! ingests OTLP itself, on 4317 (gRPC) and 4318 (HTTP/protobuf), so the
//! legacy collector URL is mapped to the same host's OTLP/HTTP port:
//! `http://jaeger:14268/api/traces` → `http://jaeger:4318` (HTTP/protobuf).
//! A Jaeger URL already on 4317 or 4318 keeps its port. It is used only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is unset.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::sys;

/// The OTLP/HTTP path for traces, appended to a base endpoint as the OTLP
/// specification says for `OTEL_EXPORTER_OTLP_ENDPOINT`.
const OTLP_HTTP_TRACES_PATH: &str = "/v1/traces";
const OTLP_GRPC_PORT: u16 = 4317;
const OTLP_HTTP_PORT: u16 = 4318;

mod args;

pub use args::ExportArgs;

/// Validated export settings.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// `ENABLE_TELEMETRY`: false means attach nothing.
    pub enabled: bool,
    /// `SERVICE_NAME`, else `OTEL_SERVICE_NAME`; `None`: each call's pod,
    /// container or process name.
    pub service_name: Option<String>,
    /// When a call counts as slow.
    pub slow: SlowThresholds,
    /// The /metrics endpoint.
    pub metrics: MetricsEndpointSettings,
    /// `--max-label-values`: at least 1.
    pub max_label_values: usize,
    /// `None`: no endpoint configured, traces are off.
    pub otlp: Option<OtlpSettings>,
}

/// When a call counts as slow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowThresholds {
    /// `LLM_SLOW_REQUEST_THRESHOLD_SECONDS`: slower than this (0: off).
    pub duration_seconds: f64,
    /// `LLM_SLOW_TOKEN_RATE_THRESHOLD`: fewer tokens/s than this.
    pub token_rate: f64,
}

/// The /metrics endpoint.
#[derive(Clone, Debug)]
pub struct MetricsEndpointSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A token scrapes must present, if any.
    pub bearer_token: Option<String>,
    /// Built from --metrics-tls-cert/--metrics-tls-key.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// OTLP protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// Where and how traces are exported.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    /// For gRPC the endpoint as given; for HTTP the full traces URL.
    pub endpoint: String,
    /// gRPC or HTTP.
    pub protocol: OtlpProtocol,
    /// Sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// How long one export may take.
    pub timeout: Duration,
    /// The share of calls exported as spans (`TELEMETRY_SAMPLE_RATE`).
    pub sample_rate: f64,
    /// Chunk events per span at most.
    pub max_chunk_events: usize,
    /// Spans queued for export at most; more are dropped and counted.
    pub queue_size: usize,
}

/// A setting with a bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The value of the setting named by its variable and flag is unusable.
    #[error("invalid {env} ({flag}) {value:?}: {reason}")]
    Invalid {
        /// Its environment variable.
        env: &'static str,
        /// Its flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Names one setting in errors.
#[derive(Clone, Copy)]
struct Setting {
    env: &'static str,
    flag: &'static str,
}

impl Setting {
    const fn new(env: &'static str, flag: &'static str) -> Self {
        Setting { env, flag }
    }

    fn invalid(self, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            env: self.env,
            flag: self.flag,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    fn non_negative(self, value: &str) -> Result<f64, ConfigError> {
        match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(self.invalid(value, "must be a number >= 0")),
        }
    }

    fn positive_count(self, value: &str) -> Result<usize, ConfigError> {
        match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.invalid(value, "must be a whole number >= 1")),
        }
    }
}

const ENABLE: Setting = Setting::new("ENABLE_TELEMETRY", "--enable-telemetry");
const OTLP_ENDPOINT: Setting = Setting::new("OTEL_EXPORTER_OTLP_ENDPOINT", "--otlp-endpoint");
const OTLP_PROTOCOL: Setting = Setting::new("OTEL_EXPORTER_OTLP_PROTOCOL", "--otlp-protocol");
const OTLP_HEADERS: Setting = Setting::new("OTEL_EXPORTER_OTLP_HEADERS", "--otlp-headers");
const OTLP_TIMEOUT: Setting = Setting::new("OTEL_EXPORTER_OTLP_TIMEOUT", "--otlp-timeout");
const JAEGER: Setting = Setting::new("JAEGER_ENDPOINT", "--jaeger-endpoint");
const SLOW_DURATION: Setting = Setting::new(
    "LLM_SLOW_REQUEST_THRESHOLD_SECONDS",
    "--slow-request-threshold-seconds",
);
const SLOW_RATE: Setting = Setting::new(
    "LLM_SLOW_TOKEN_RATE_THRESHOLD",
    "--slow-token-rate-threshold",
);
const SAMPLE_RATE: Setting = Setting::new("TELEMETRY_SAMPLE_RATE", "--telemetry-sample-rate");
const METRICS_ADDR: Setting = Setting::new("LLMTAP_METRICS_ADDR", "--metrics-addr");
const TOKEN: Setting = Setting::new("LLMTAP_METRICS_BEARER_TOKEN", "--metrics-bearer-token");
const TOKEN_FILE: Setting = Setting::new(
    "LLMTAP_METRICS_BEARER_TOKEN_FILE",
    "--metrics-bearer-token-file",
);
const TLS_CERT: Setting = Setting::new("LLMTAP_METRICS_TLS_CERT", "--metrics-tls-cert");
const TLS_KEY: Setting = Setting::new("LLMTAP_METRICS_TLS_KEY", "--metrics-tls-key");
const MAX_LABELS: Setting = Setting::new("LLMTAP_MAX_LABEL_VALUES", "--max-label-values");
const MAX_CHUNKS: Setting = Setting::new("LLMTAP_MAX_CHUNK_EVENTS", "--max-chunk-events");
const QUEUE_SIZE: Setting = Setting::new("LLMTAP_OTLP_QUEUE_SIZE", "--otlp-queue-size");

impl ExportSettings {
    /// Validates every setting; reads the token and TLS files.
    pub fn from_args(args: &ExportArgs) -> Result<Self, ConfigError> {
        let enabled = parse_bool(&args.enable_telemetry)
            .ok_or_else(|| ENABLE.invalid(&args.enable_telemetry, "must be true or false"))?;
        let sample_rate = SAMPLE_RATE.non_negative(&args.telemetry_sample_rate)?;
        if sample_rate > 1.0 {
            return Err(SAMPLE_RATE.invalid(&args.telemetry_sample_rate, "must be between 0 and 1"));
        }
        let slow = SlowThresholds {
            duration_seconds: SLOW_DURATION.non_negative(&args.slow_request_threshold_seconds)?,
            token_rate: SLOW_RATE.non_negative(&args.slow_token_rate_threshold)?,
        };
        let addr = args.metrics_addr.trim().parse().map_err(|_| {
            METRICS_ADDR.invalid(&args.metrics_addr, "must be IP:PORT, e.g. 127.0.0.1:9464")
        })?;
        let metrics = MetricsEndpointSettings {
            addr,
            bearer_token: bearer_token(args)?,
            tls: match (&args.metrics_tls_cert, &args.metrics_tls_key) {
                (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
                _ => None,
            },
        };
        Ok(ExportSettings {
            enabled,
            service_name: args
                .service_name
                .clone()
                .or_else(|| args.otel_service_name.clone())
                .filter(|name| !name.trim().is_empty()),
            slow,
            metrics,
            max_label_values: MAX_LABELS.positive_count(&args.max_label_values)?,
            otlp: otlp_settings(args, sample_rate)?,
        })
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A bearer token file is read up to this many bytes.
const TOKEN_FILE_MAX: usize = 4096;
/// A PEM certificate chain or key file is read up to this many bytes.
const PEM_FILE_MAX: usize = 1 << 20;

fn bearer_token(args: &ExportArgs) -> Result<Option<String>, ConfigError> {
    let (token, setting, shown) =
        match (&args.metrics_bearer_token, &args.metrics_bearer_token_file) {
            (Some(token), _) => (token.clone(), TOKEN, "(hidden)".to_owned()),
            (None, Some(path)) => {
                let shown = path.display().to_string();
                let token = sys::files::read_small_file(path, TOKEN_FILE_MAX)
                    .map_err(|e| TOKEN_FILE.invalid(&shown, format!("cannot read it: {e}")))?;
                let token = String::from_utf8_lossy(&token).into_owned();
                (token, TOKEN_FILE, shown)
            }
            (None, None) => return Ok(None),
        };
    let token = token.trim();
    // It goes into a header comparison: visible ASCII only, and not empty.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(setting.invalid(
            &shown,
            "the token must be non-empty printable ASCII without spaces",
        ));
    }
    Ok(Some(token.to_owned()))
}

fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let cert_shown = cert.display().to_string();
    let key_shown = key.display().to_string();
    let cert_pem = sys::files::read_small_file(cert, PEM_FILE_MAX)
        .map_err(|e| TLS_CERT.invalid(&cert_shown, format!("cannot read it: {e}")))?;
    let key_pem = sys::files::read_small_file(key, PEM_FILE_MAX)
        .map_err(|e| TLS_KEY.invalid(&key_shown, format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TLS_CERT.invalid(&cert_shown, format!("cannot read a PEM certificate: {e}"))
        })?;
    if certs.is_empty() {
        return Err(TLS_CERT.invalid(&cert_shown, "holds no PEM certificate"));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TLS_KEY.invalid(&key_shown, format!("cannot read a PEM private key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TLS_CERT.invalid(&cert_shown, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| TLS_KEY.invalid(&key_shown, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(config))
}

fn otlp_settings(args: &ExportArgs, sample_rate: f64) -> Result<Option<OtlpSettings>, ConfigError> {
    let explicit_protocol = args
        .otlp_protocol
        .as_deref()
        .map(|p| match p.trim() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            _ => Err(OTLP_PROTOCOL.invalid(p, "must be grpc or http/protobuf")),
        })
        .transpose()?;
    let max_chunk_events = MAX_CHUNKS.positive_count(&args.max_chunk_events)?;
    let queue_size = QUEUE_SIZE.positive_count(&args.otlp_queue_size)?;
    let timeout_ms = OTLP_TIMEOUT.positive_count(&args.otlp_timeout)?;
    let headers = match &args.otlp_headers {
        Some(h) => parse_headers(h)?,
        None => Vec::new(),
    };
    let (base, protocol) = match (&args.otlp_endpoint, &args.jaeger_endpoint) {
        (Some(endpoint), _) if !endpoint.trim().is_empty() => {
            let url = BaseUrl::parse(endpoint)
                .map_err(|reason| OTLP_ENDPOINT.invalid(endpoint, reason))?;
            let protocol = explicit_protocol.unwrap_or(match url.port {
                Some(OTLP_GRPC_PORT) => OtlpProtocol::Grpc,
                _ => OtlpProtocol::HttpProtobuf,
            });
            (url, protocol)
        }
        (_, Some(jaeger)) if !jaeger.trim().is_empty() => {
            let url = BaseUrl::parse(jaeger).map_err(|reason| JAEGER.invalid(jaeger, reason))?;
            jaeger_to_otlp(url, explicit_protocol)
        }
        _ => return Ok(None),
    };
    let endpoint = match protocol {
        OtlpProtocol::Grpc => base.to_string(),
        OtlpProtocol::HttpProtobuf if base.path.ends_with(OTLP_HTTP_TRACES_PATH) => {
            base.to_string()
        }
        OtlpProtocol::HttpProtobuf => format!(
            "{}{OTLP_HTTP_TRACES_PATH}",
            base.to_string().trim_end_matches('/')
        ),
    };
    Ok(Some(OtlpSettings {
        endpoint,
        protocol,
        headers,
        timeout: Duration::from_millis(timeout_ms as u64),
        sample_rate,
        max_chunk_events,
        queue_size,
    }))
}

/// Jaeger's legacy ports (14268 Thrift/HTTP, 14250 gRPC, 6831/6832 UDP) to
/// its OTLP receiver; see the module docs.
fn jaeger_to_otlp(mut url: BaseUrl, explicit: Option<OtlpProtocol>) -> (BaseUrl, OtlpProtocol) {
    url.path.clear();
    let protocol = match (url.port, explicit) {
        (_, Some(p)) => p,
        (Some(OTLP_GRPC_PORT), None) => OtlpProtocol::Grpc,
        _ => OtlpProtocol::HttpProtobuf,
    };
    url.port = Some(match protocol {
        OtlpProtocol::Grpc => OTLP_GRPC_PORT,
        OtlpProtocol::HttpProtobuf => OTLP_HTTP_PORT,
    });
    (url, protocol)
}

/// `scheme://host[:port][/path]`, the only URL shape an OTLP endpoint has.
#[derive(Debug, PartialEq)]
struct BaseUrl {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

impl BaseUrl {
    fn parse(value: &str) -> Result<BaseUrl, String> {
        let uri: http::Uri = value
            .trim()
            .parse()
            .map_err(|e| format!("not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_owned(),
            _ => return Err("must start with http:// or https://".into()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?
            .to_owned();
        let path = uri.path().trim_end_matches('/').to_owned();
        Ok(BaseUrl {
            scheme,
            host,
            port: uri.port_u16(),
            path,
        })
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        f.write_str(&self.path)
    }
}

/// `k1=v1,k2=v2` with %-encoded values, as the OTLP exporter spec defines.
fn parse_headers(value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, val) = pair.split_once('=').ok_or_else(|| {
                OTLP_HEADERS.invalid(
                    "(hidden)",
                    format!(
                        "{:?} is not key=value",
                        pair.split('=').next().unwrap_or_default()
                    ),
                )
            })?;
            let key = key.trim();
            let valid_key = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            // A control character (CR, LF) would end the header early.
            let val = percent_decode(val.trim())
                .filter(|v| !v.chars().any(|c| c.is_control() && c != '\t'));
            match val {
                Some(val) if valid_key => Ok((key.to_ascii_lowercase(), val)),
                _ => Err(OTLP_HEADERS.invalid("(hidden)", format!("bad header {key:?}"))),
            }
        })
        .collect()
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The export flags alone, as the CLI flattens them, for tests.
#[cfg(test)]
#[derive(clap::Parser)]
struct TestCli {
    #[command(flatten)]
    export: ExportArgs,
}

/// Parses export flags as the CLI would, for tests.
#[cfg(test)]
pub(crate) fn test_args(flags: &[&str]) -> ExportArgs {
    use clap::Parser;
    let mut argv = vec!["llmtap"];
    argv.extend_from_slice(flags);
    TestCli::try_parse_from(argv).unwrap().export
}

/// The default settings, for tests.
#[cfg(test)]
pub(crate) fn test_settings() -> ExportSettings {
    ExportSettings::from_args(&test_args(&[])).unwrap()
}

#[cfg(test)]
mod tests;

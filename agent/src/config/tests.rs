use super::*;

fn args(flags: &[&str]) -> ExportArgs {
    test_args(flags)
}

fn error(flags: &[&str]) -> String {
    ExportSettings::from_args(&args(flags))
        .unwrap_err()
        .to_string()
}

#[test]
fn help_names_every_variable() {
    use clap::CommandFactory;
    let help = TestCli::command().render_long_help().to_string();
    for setting in [
        ENABLE,
        OTLP_ENDPOINT,
        OTLP_PROTOCOL,
        OTLP_HEADERS,
        OTLP_TIMEOUT,
        JAEGER,
        SLOW_DURATION,
        SLOW_RATE,
        SAMPLE_RATE,
        METRICS_ADDR,
        TOKEN,
        TOKEN_FILE,
        TLS_CERT,
        TLS_KEY,
        MAX_LABELS,
        MAX_CHUNKS,
        QUEUE_SIZE,
    ] {
        assert!(help.contains(setting.env), "{} not in --help", setting.env);
        assert!(
            help.contains(setting.flag),
            "{} not in --help",
            setting.flag
        );
    }
    for seed in ["SERVICE_NAME", "OTEL_SERVICE_NAME", "14268/api/traces"] {
        assert!(help.contains(seed), "{seed} not in --help");
    }
}

#[test]
fn defaults_are_the_seeds() {
    let s = ExportSettings::from_args(&args(&[])).unwrap();
    assert!(s.enabled);
    assert_eq!(
        s.slow,
        SlowThresholds {
            duration_seconds: 5.0,
            token_rate: 10.0
        }
    );
    assert_eq!(s.metrics.addr, "127.0.0.1:9464".parse().unwrap());
    assert!(s.metrics.bearer_token.is_none() && s.metrics.tls.is_none());
    assert_eq!(s.max_label_values, 100);
    assert!(s.otlp.is_none());
}

#[test]
fn each_bad_value_names_its_setting() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--telemetry-sample-rate", "2"],
            r#"invalid TELEMETRY_SAMPLE_RATE (--telemetry-sample-rate) "2": must be between 0 and 1"#,
        ),
        (
            &["--telemetry-sample-rate", "-0.1"],
            "invalid TELEMETRY_SAMPLE_RATE",
        ),
        (
            &["--slow-request-threshold-seconds", "-1"],
            r#"invalid LLM_SLOW_REQUEST_THRESHOLD_SECONDS (--slow-request-threshold-seconds) "-1": must be a number >= 0"#,
        ),
        (
            &["--slow-token-rate-threshold", "fast"],
            "invalid LLM_SLOW_TOKEN_RATE_THRESHOLD (--slow-token-rate-threshold)",
        ),
        (
            &["--slow-token-rate-threshold", "NaN"],
            "invalid LLM_SLOW_TOKEN_RATE_THRESHOLD",
        ),
        (
            &["--metrics-addr", "localhost"],
            r#"invalid LLMTAP_METRICS_ADDR (--metrics-addr) "localhost": must be IP:PORT"#,
        ),
        (
            &["--enable-telemetry", "maybe"],
            "invalid ENABLE_TELEMETRY (--enable-telemetry)",
        ),
        (
            &["--otlp-endpoint", "collector:4317"],
            "invalid OTEL_EXPORTER_OTLP_ENDPOINT (--otlp-endpoint)",
        ),
        (
            &["--otlp-endpoint", "ftp://c:1"],
            r#"invalid OTEL_EXPORTER_OTLP_ENDPOINT (--otlp-endpoint) "ftp://c:1": must start with http:// or https://"#,
        ),
        (
            &[
                "--otlp-endpoint",
                "http://c:4317",
                "--otlp-protocol",
                "http/json",
            ],
            "invalid OTEL_EXPORTER_OTLP_PROTOCOL (--otlp-protocol)",
        ),
        (
            &["--otlp-headers", "novalue"],
            "invalid OTEL_EXPORTER_OTLP_HEADERS (--otlp-headers)",
        ),
        (
            &["--otlp-timeout", "0"],
            "invalid OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
        (
            &["--jaeger-endpoint", "jaeger"],
            "invalid JAEGER_ENDPOINT (--jaeger-endpoint)",
        ),
        (
            &["--max-label-values", "0"],
            "invalid LLMTAP_MAX_LABEL_VALUES (--max-label-values)",
        ),
        (
            &["--max-chunk-events", "-3"],
            "invalid LLMTAP_MAX_CHUNK_EVENTS",
        ),
        (
            &["--otlp-queue-size", "x"],
            "invalid LLMTAP_OTLP_QUEUE_SIZE",
        ),
        (
            &["--metrics-bearer-token", "a b"],
            "invalid LLMTAP_METRICS_BEARER_TOKEN",
        ),
        (
            &["--metrics-bearer-token-file", "/nonexistent/token"],
            "invalid LLMTAP_METRICS_BEARER_TOKEN_FILE",
        ),
        (
            &[
                "--metrics-tls-cert",
                "/nonexistent/c.pem",
                "--metrics-tls-key",
                "/nonexistent/k.pem",
            ],
            "invalid LLMTAP_METRICS_TLS_CERT",
        ),
    ];
    for (flags, expected) in cases {
        let message = error(flags);
        assert!(message.starts_with(expected), "{flags:?}: {message}");
        assert!(!message.contains('\n'), "{message}");
    }
}

#[test]
fn secrets_are_not_echoed_in_errors() {
    assert!(!error(&["--metrics-bearer-token", "sec ret"]).contains("sec"));
    assert!(!error(&["--otlp-headers", "authorization=x%zz"]).contains("x%zz"));
}

#[test]
fn otlp_endpoint_protocol_and_path() {
    let otlp = |flags: &[&str]| {
        ExportSettings::from_args(&args(flags))
            .unwrap()
            .otlp
            .unwrap()
    };
    let grpc = otlp(&["--otlp-endpoint", "http://c:4317"]);
    assert_eq!(
        (grpc.endpoint.as_str(), grpc.protocol),
        ("http://c:4317", OtlpProtocol::Grpc)
    );
    let http = otlp(&["--otlp-endpoint", "https://c:4318/"]);
    assert_eq!(
        (http.endpoint.as_str(), http.protocol),
        ("https://c:4318/v1/traces", OtlpProtocol::HttpProtobuf)
    );
    let forced = otlp(&[
        "--otlp-endpoint",
        "http://c:9000",
        "--otlp-protocol",
        "grpc",
    ]);
    assert_eq!(forced.protocol, OtlpProtocol::Grpc);
    let full = otlp(&["--otlp-endpoint", "http://c/otlp/v1/traces"]);
    assert_eq!(full.endpoint, "http://c/otlp/v1/traces");
    let headers = otlp(&[
        "--otlp-endpoint",
        "http://c:4317",
        "--otlp-headers",
        "Authorization=Bearer%20x, x-tenant=a",
    ]);
    assert_eq!(
        headers.headers,
        [
            ("authorization".into(), "Bearer x".into()),
            ("x-tenant".into(), "a".into())
        ]
    );
    assert_eq!(headers.timeout, Duration::from_secs(10));
    assert_eq!(
        (
            headers.sample_rate,
            headers.max_chunk_events,
            headers.queue_size
        ),
        (1.0, 64, 512)
    );
}

#[test]
fn jaeger_endpoint_maps_to_otlp_only_without_an_otlp_endpoint() {
    let otlp = |flags: &[&str]| {
        ExportSettings::from_args(&args(flags))
            .unwrap()
            .otlp
            .unwrap()
    };
    let legacy = otlp(&["--jaeger-endpoint", "http://jaeger:14268/api/traces"]);
    assert_eq!(legacy.endpoint, "http://jaeger:4318/v1/traces");
    assert_eq!(legacy.protocol, OtlpProtocol::HttpProtobuf);
    let grpc = otlp(&["--jaeger-endpoint", "http://jaeger:4317"]);
    assert_eq!(
        (grpc.endpoint.as_str(), grpc.protocol),
        ("http://jaeger:4317", OtlpProtocol::Grpc)
    );
    let both = otlp(&[
        "--jaeger-endpoint",
        "http://jaeger:14268",
        "--otlp-endpoint",
        "http://otel:4317",
    ]);
    assert_eq!(both.endpoint, "http://otel:4317");
}

#[test]
fn service_name_and_enable_flag() {
    let s = ExportSettings::from_args(&args(&[
        "--otel-service-name",
        "b",
        "--enable-telemetry",
        "false",
    ]))
    .unwrap();
    assert_eq!(s.service_name.as_deref(), Some("b"));
    assert!(!s.enabled);
    let s = ExportSettings::from_args(&args(&["--service-name", "a", "--otel-service-name", "b"]))
        .unwrap();
    assert_eq!(s.service_name.as_deref(), Some("a"));
}

#[test]
fn token_file_is_trimmed() {
    let dir = std::env::temp_dir().join(format!("llmtap-token-{}", std::process::id()));
    std::fs::write(&dir, "s3cret\n").unwrap();
    let s = ExportSettings::from_args(&args(&[
        "--metrics-bearer-token-file",
        dir.to_str().unwrap(),
    ]))
    .unwrap();
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(s.metrics.bearer_token.as_deref(), Some("s3cret"));
}

#[test]
fn token_and_pem_files_that_are_not_small_regular_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("llmtap-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("token.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let large = dir.join("token.large");
    std::fs::write(&large, "x".repeat(5000)).unwrap();
    let fifo = fifo.to_str().unwrap();
    let large = large.to_str().unwrap();
    for (flags, expected) in [
        (
            &["--metrics-bearer-token-file", fifo][..],
            "not a regular file",
        ),
        (
            &["--metrics-bearer-token-file", "/dev/zero"],
            "not a regular file",
        ),
        (
            &["--metrics-bearer-token-file", large],
            "larger than 4096 bytes",
        ),
        (
            &[
                "--metrics-tls-cert",
                "/dev/zero",
                "--metrics-tls-key",
                "/dev/zero",
            ],
            "not a regular file",
        ),
    ] {
        let message = error(flags);
        assert!(message.contains(expected), "{flags:?}: {message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn control_characters_in_otlp_headers_are_refused() {
    for headers in ["a=b%0D%0Ax-injected=1", "a=b\r\nx: 1", "a=%00"] {
        let message = error(&["--otlp-headers", headers]);
        assert!(
            message.starts_with("invalid OTEL_EXPORTER_OTLP_HEADERS"),
            "{headers:?}: {message}"
        );
    }
    assert!(
        ExportSettings::from_args(&args(&["--otlp-headers", "a=b%09c"])).is_ok(),
        "a tab is allowed"
    );
}

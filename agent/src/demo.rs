//! `llmtap demo`: the agent's main job on a built-in target. Starts the mock
//! LLM server (`llmtap-mock-llm`) over TLS on loopback, runs a real client
//! (curl, through the system libssl) against it under the agent with
//! /metrics live, logs one line per call the agent saw, and shows the
//! resulting LLM metrics. Only in builds with the `demo` cargo feature (the
//! default; the container image leaves it out).

use std::ffi::OsString;

use anyhow::Context;
use llmtap_mock_llm::ServerConfig;

use crate::capture::ebpf::scope::Scopes;
use crate::capture::ebpf::EbpfConfig;
use crate::cli::DemoArgs;
use crate::config::ExportSettings;
use crate::run::{self, AgentOptions, Outcome, OutputOptions};

/// Runs the demo until its client is done (and `--linger` is over).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("llmtap-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert = dir.join("ca.pem");
    let server = llmtap_mock_llm::start(ServerConfig {
        tls_cert_out: Some(cert.clone()),
        ..ServerConfig::default()
    })
    .await?;
    let url = format!("{}/v1/chat/completions", server.base_url());
    println!("llmtap demo: a mock LLM server streams chat completions at {url}");
    let export = ExportSettings::from_args(&args.export)?;
    let metrics = format!("http://{}/metrics", export.metrics.addr);
    println!(
        "llmtap demo: curl calls it {} time(s), watched by llmtap from its first instruction",
        args.calls
    );
    println!("llmtap demo: metrics are served at {metrics} while the demo runs\n");

    // One shell loop, so every curl is a fresh short-lived process that the
    // agent follows from the shell by fork.
    let body = r#"{"model":"demo-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}"#;
    // Then the shell scrapes the agent's own /metrics and keeps it up for
    // --linger seconds.
    let script = format!(
        "for i in $(seq {calls}); do curl -sS -N --http1.1 --cacert '{cert}' -H 'content-type: application/json' \
         -d '{body}' '{url}' > /dev/null || exit 1; sleep 0.3; done; sleep 1.2; \
         echo; echo 'llmtap demo: the LLM metrics now ({metrics}):'; \
         curl -sS '{metrics}' | grep -E '^llm_(request_duration_seconds|time_to_first_token_seconds)_(sum|count)|^llm_total_tokens_total'; \
         sleep {linger}",
        calls = args.calls,
        cert = cert.display(),
        linger = args.linger,
    );
    let options = AgentOptions {
        pids: Vec::new(),
        scopes: Scopes::default(),
        command: ["/bin/sh", "-c", &script].map(OsString::from).to_vec(),
        output: OutputOptions::default(),
        ebpf: EbpfConfig::default(),
        export,
    };
    let outcome = run::run_ebpf(options).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome? {
        Outcome::CommandExited(status) if !status.success() => {
            anyhow::bail!("the demo client failed ({status}): is curl installed?")
        }
        _ => Ok(()),
    }
}

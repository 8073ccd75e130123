//! The stack around the agent (issue 7): the container image, the
//! monitoring compose file with Prometheus, Grafana and Jaeger, the LLM
//! Performance Dashboard, the Kubernetes manifests and the Helm chart.
//! There is no Docker engine or cluster here, so each file is checked by
//! the real implementations that read it and can run here (see
//! `llmtap_tests::stack`), and the agent is run by the tests the way each
//! one runs it: with the compose service's command and environment, and
//! with the DaemonSet's arguments, environment and capabilities.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use llmtap_tests::otlp_receiver::OtlpReceiver;
use llmtap_tests::prometheus::{http_get, scraped, Prometheus};
use llmtap_tests::stack::*;
use llmtap_tests::*;
use serde_json::Value;

/// The compose service the agent runs as.
const AGENT_SERVICE: &str = "llmtap";
/// The release and namespace the plain manifests are rendered for.
const RELEASE: &str = "llmtap";
/// The values deploy/kubernetes/ is rendered from, and the example of
/// non-default values.
const MANIFEST_VALUES: &str = "deploy/kubernetes/render-values.yaml";
const EXAMPLE_VALUES: &str = "deploy/helm/llmtap/examples/scoped-values.yaml";
/// The capabilities the agent needs: those it checks for at startup, and
/// SYS_ADMIN, without which current kernels refuse to create its uprobes.
const REQUIRED_CAPABILITIES: [&str; 4] = ["BPF", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"];

/// The agent's command line as a container runs it: compose's `command`
/// (a string is split as a shell would, without quoting, which the file
/// does not use) and its environment, unset variables (null) left out.
fn container_command(service: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let args = match &service["command"] {
        Value::String(line) => line.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .map(|a| a.as_str().expect("a string").to_owned())
            .collect(),
        other => panic!("command: {other}"),
    };
    let env = service["environment"]
        .as_object()
        .expect("environment as a mapping")
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    (args, env)
}

/// The port of a `HOST:PORT` listen address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// The host side of a compose port mapping (`3005:3000` → 3005).
fn host_port(mapping: &str) -> u16 {
    mapping
        .split(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port mapping {mapping:?}"))
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} is not set: {env:?}"))
}

/// One streamed chat call with curl (through the shell, so that the agent
/// sees a fresh process, as the application's own would be).
///
/// The call goes to `api.openai.com`, resolved to the mock on loopback: the
/// agents here run with the shipped `--all`, which hooks TLS only in a
/// process whose handshake names an LLM API host. (`-k`: the mock's
/// certificate names localhost.)
fn curl_call(server: &MockServer, model: &str, must_succeed: bool) {
    const HOST: &str = "api.openai.com";
    let port = server.addr.port();
    let curl = format!("curl -k --resolve {HOST}:{port}:127.0.0.1 ");
    let script = format!(
        "url=$1; body=$2; tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01; {}",
        CURL_CALL.replacen("curl ", &curl, 1)
    );
    let url = server.base_url().replace("127.0.0.1", HOST);
    let mut command = Command::new("sh");
    command
        .args(["-c", &script, "sh", &url, &chat_body(model)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    client_env(&mut command, server.cert.as_deref());
    let status = command.status().expect("run curl");
    if must_succeed {
        assert!(status.success(), "curl {model}: {status}");
    }
}

/// The mock server over TLS: `chunks` output tokens per call, the first
/// after `first_ms`, then one every `gap_ms`.
fn tls_mock(chunks: u32, first_ms: u32, gap_ms: u32) -> MockServer {
    MockServer::start(
        true,
        &[
            "--chunks",
            &chunks.to_string(),
            "--first-token-delay-ms",
            &first_ms.to_string(),
            "--chunk-delay-ms",
            &gap_ms.to_string(),
        ],
    )
}

fn scrape(addr: SocketAddr) -> String {
    let (status, text) = http_get(addr, "/metrics").expect("the agent serves /metrics");
    assert_eq!(status, 200, "{text}");
    text
}

#[test]
fn every_dashboard_query_returns_series_from_prometheus_scraping_the_compose_agent() {
    let _serial = serial();
    // A fast model, a model slow enough to cross the slow-call threshold
    // both ways (duration and token rate), and two kinds of failure.
    const FAST: &str = "stack-fast";
    const SLOW: &str = "stack-slow";
    const SLOW_THRESHOLD_SECONDS: &str = "1.0";
    const ROUNDS: u32 = 2;
    let fast = tls_mock(8, 40, 15);
    let slow = tls_mock(8, 300, 150);

    // The agent as compose runs it, the threshold given the way a user
    // gives it: an environment variable the compose file interpolates.
    let compose = compose_config(&[("LLM_SLOW_REQUEST_THRESHOLD_SECONDS", SLOW_THRESHOLD_SECONDS)])
        .unwrap_or_else(|e| panic!("{e}"));
    let (args, env) = container_command(&compose["services"][AGENT_SERVICE]);
    assert_eq!(
        env_value(&env, "LLM_SLOW_REQUEST_THRESHOLD_SECONDS"),
        SLOW_THRESHOLD_SECONDS
    );
    // Compose's Jaeger becomes a receiver on loopback; the metrics address
    // a free loopback port (RunningAgent's --metrics-addr flag wins over
    // LLMTAP_METRICS_ADDR).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(OtlpReceiver::start());
    let mut agent = Command::new(llmtap_bin());
    for (name, value) in &env {
        let value = match name.as_str() {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => {
                assert_eq!(value, "http://jaeger:4317");
                receiver.grpc_endpoint()
            }
            _ => value.clone(),
        };
        agent.env(name, value);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start_with(agent, &args);
    agent.wait_for_log("watching", Duration::from_secs(30));
    let addr = agent.metrics_addr();
    let prometheus = Prometheus::start(addr, None);

    // Two rounds a few scrapes apart, so that every counter and bucket
    // has increased between two samples: rates and quantiles are numbers.
    for _ in 0..ROUNDS {
        for _ in 0..3 {
            curl_call(&fast, FAST, true);
        }
        curl_call(&slow, SLOW, true);
        curl_call(&fast, "error-429", false);
        curl_call(&fast, "error-midstream", false);
        std::thread::sleep(Duration::from_secs(3));
    }
    let wait = Duration::from_secs(30);
    for (model, calls) in [(FAST, 3 * ROUNDS), (SLOW, ROUNDS)] {
        prometheus.wait_for_value(
            &format!("sum(llm_request_duration_seconds_count{{model=\"{model}\"}})"),
            f64::from(calls),
            wait,
        );
    }
    prometheus.wait_for_value(
        &format!("sum(llm_slow_requests_total{{model=\"{SLOW}\",reason=\"duration\"}})"),
        f64::from(ROUNDS),
        wait,
    );

    let exported = exported_series_names(&scrape(addr));
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut problems = Vec::new();
    for query in &queries {
        let DashboardQuery { source, promql } = query;
        if promql.contains('$') {
            problems.push(format!("{source}: a variable is left in {promql}"));
            continue;
        }
        let names = metric_names(promql);
        if names.is_empty() {
            problems.push(format!("{source}: no metric in {promql}"));
        }
        for name in names {
            if !exported.contains(&name) {
                problems.push(format!("{source}: {name} is not a metric llmtap exports"));
            }
        }
        // The query helper fails on anything Prometheus cannot parse.
        let result = prometheus.query(promql);
        let values: Vec<f64> = result
            .iter()
            .filter_map(|series| series["value"][1].as_str()?.parse().ok())
            .collect();
        if !values.iter().any(|v| v.is_finite()) {
            problems.push(format!(
                "{source}: {promql} returned no series with a number: {result:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn the_dashboard_type_checks_against_grafanas_schema() {
    let dashboard = dashboard();
    typecheck_dashboard(&dashboard).unwrap_or_else(|report| panic!("{report}"));
    // The check is not vacuous: one misspelt field fails it.
    let mut misspelt = dashboard.clone();
    misspelt["panels"][1]["gridPos"]["width"] = 6.into();
    let report = typecheck_dashboard(&misspelt).expect_err("a misspelt field must fail");
    assert!(report.contains("'\"width\"' does not exist"), "{report}");

    // What the issue asks of it.
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["service", "model", "provider"]);
    let jaeger_links = dashboard["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["url"].as_str().unwrap_or_default().contains(":16686/"));
    assert_eq!(jaeger_links.count(), 1, "a link to Jaeger's UI");
    let kinds: BTreeSet<&str> = panels(&dashboard)
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    for kind in ["timeseries", "heatmap", "table", "stat"] {
        assert!(kinds.contains(kind), "no {kind} panel");
    }
}

#[test]
fn prometheus_and_grafana_provisioning_point_at_the_compose_services() {
    let prometheus_yml = workspace_root().join("docker/prometheus/prometheus.yml");
    output_of(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(&prometheus_yml),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let compose = compose_config(&[]).unwrap_or_else(|e| panic!("{e}"));
    let services = &compose["services"];
    let (_, env) = container_command(&services[AGENT_SERVICE]);
    let agent_port = port_of(env_value(&env, "LLMTAP_METRICS_ADDR"));

    // Prometheus scrapes the agent service on its metrics port.
    let config = &yaml_documents(&read("docker/prometheus/prometheus.yml"))[0];
    let llmtap_job = config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["job_name"] == "llmtap")
        .expect("an llmtap job");
    assert_eq!(
        llmtap_job["static_configs"][0]["targets"][0],
        format!("{AGENT_SERVICE}:{agent_port}")
    );
    let mount = "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro";
    assert!(strings(&services["prometheus"]["volumes"]).contains(&mount.to_owned()));

    // Grafana's data sources: the compose services, on their ports; the
    // dashboard's uids and types among them; the scrape interval as
    // Grafana's $__rate_interval base.
    let datasources = &yaml_documents(&read(
        "docker/grafana/provisioning/datasources/datasources.yml",
    ))[0]["datasources"];
    let by_uid = |uid: &str| {
        datasources
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["uid"] == uid)
            .unwrap_or_else(|| panic!("no data source {uid}"))
            .clone()
    };
    for (uid, kind, url) in [
        ("prometheus", "prometheus", "http://prometheus:9090"),
        ("jaeger", "jaeger", "http://jaeger:16686"),
    ] {
        let source = by_uid(uid);
        assert_eq!(source["type"], kind);
        assert_eq!(source["url"], url);
        let service = url.trim_start_matches("http://").split(':').next().unwrap();
        let port = port_of(url);
        let published = strings(&services[service]["ports"]);
        assert!(
            published.iter().any(|p| port_of(p) == port),
            "{service} does not listen on {port}: {published:?}"
        );
    }
    assert_eq!(
        by_uid("prometheus")["jsonData"]["timeInterval"],
        config["global"]["scrape_interval"]
    );
    let dashboard = dashboard();
    for panel in panels(&dashboard) {
        let used = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| &t["datasource"])
            .chain([&panel["datasource"]])
            .filter(|d| !d.is_null());
        for datasource in used {
            let uid = datasource["uid"].as_str().unwrap();
            assert_eq!(
                by_uid(uid)["type"],
                datasource["type"],
                "{}",
                panel["title"]
            );
        }
    }

    // The dashboard provider reads where compose mounts the dashboards,
    // and the home dashboard is the LLM Performance Dashboard.
    let providers = &yaml_documents(&read(
        "docker/grafana/provisioning/dashboards/dashboards.yml",
    ))[0]["providers"];
    let path = providers[0]["options"]["path"].as_str().unwrap();
    let grafana = &services["grafana"];
    assert!(
        grafana["volumes"]
            .as_array()
            .unwrap()
            .contains(&format!("./grafana/dashboards:{path}:ro").into()),
        "{grafana}"
    );
    let file_name = Path::new(DASHBOARD).file_name().unwrap().to_str().unwrap();
    assert_eq!(
        grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
        format!("{path}/{file_name}")
    );
    // The image is the Grafana the dashboard's schema was published with.
    let package: Value = serde_json::from_str(&read("tests/package.json")).unwrap();
    assert_eq!(
        grafana["image"],
        format!(
            "grafana/grafana:{}",
            package["dependencies"]["@grafana/schema"].as_str().unwrap()
        )
    );
}

/// The rows of the markdown table under `heading` in `text`, as cells.
fn table_rows(text: &str, heading: &str) -> Vec<Vec<String>> {
    let section = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?} section"))
        .1;
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_compose_file_validates_and_has_what_the_readmes_name() {
    let compose_file = workspace_root().join(COMPOSE_FILE);
    check_compose_schema(&compose_file).unwrap_or_else(|e| panic!("{e}"));
    let compose = compose_config(&[]).unwrap_or_else(|e| panic!("{e}"));
    // What the implementation made of it conforms too.
    let resolved = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(resolved.path(), compose.to_string()).unwrap();
    check_compose_schema(resolved.path()).unwrap_or_else(|e| panic!("{e}"));

    let services = &compose["services"];
    let agent = &services[AGENT_SERVICE];
    assert_eq!(agent["privileged"], true);
    assert_eq!(agent["pid"], "host");
    assert_eq!(agent["cgroup"], "host");
    assert_eq!(agent["build"]["dockerfile"], "docker/Dockerfile");
    assert_eq!(
        agent["build"]["context"].as_str().map(Path::new),
        Some(workspace_root().as_path())
    );
    let (args, _) = container_command(agent);
    assert_eq!(args, ["--all"], "watches the host by default");
    // Every bind mount's source is in the repository or on the host.
    for service in services.as_object().unwrap().values() {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if let Some(relative) = source.strip_prefix("./") {
                let path = workspace_root().join("docker").join(relative);
                assert!(path.exists(), "{} is missing", path.display());
            }
        }
    }

    // docker/README.md's tables: each service's container, ports and
    // volume, and each variable the agent takes.
    let readme = read("docker/README.md");
    let published = |service: &Value| strings(&service["ports"]);
    let rows = table_rows(&readme, "## Services, ports and volumes");
    assert_eq!(rows.len(), services.as_object().unwrap().len(), "{rows:?}");
    for row in &rows {
        let [name, container, ports, volume, ..] = row.as_slice() else {
            panic!("row {row:?}");
        };
        let service = &services[name.as_str()];
        assert_eq!(service["container_name"], container.as_str(), "{name}");
        for port in ports
            .split(',')
            .map(|p| p.trim().trim_matches('`'))
            .filter(|p| !p.is_empty())
        {
            assert!(
                published(service).iter().any(|p| p == port),
                "{name} does not publish {port}: {:?}",
                published(service)
            );
        }
        if !volume.is_empty() {
            let mounted = service["volumes"].as_array().unwrap().iter().any(|v| {
                let key = v.as_str().unwrap().split(':').next().unwrap();
                compose["volumes"][key]["name"] == volume.as_str()
            });
            assert!(mounted, "{name} mounts no volume {volume}");
        }
    }
    let (_, agent_env) = container_command(agent);
    let agent_variables: BTreeSet<&str> = agent["environment"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let named = read(COMPOSE_FILE);
    for row in table_rows(&readme, "## Settings") {
        let (variable, default) = (row[0].as_str(), row[1].as_str());
        assert!(
            agent_variables.contains(variable) || named.contains(&format!("${{{variable}")),
            "the README names {variable}, which the compose file neither sets nor reads"
        );
        // With nothing set in the shell, the agent gets the README's default.
        let actual = match variable {
            "LLMTAP_ARGS" => args.join(" "),
            _ => agent_env
                .iter()
                .find(|(k, _)| k == variable)
                .map_or(String::new(), |(_, v)| v.clone()),
        };
        assert_eq!(actual, default, "{variable}'s default");
    }
    assert_eq!(env_value(&agent_env, "LLMTAP_METRICS_ADDR"), "0.0.0.0:9464");

    // docs/deployment.md's "Run with the full stack": every localhost URL is a
    // port compose publishes.
    let deployment = read("docs/deployment.md");
    let section = deployment
        .split_once("## Run with the full stack")
        .expect("a \"Run with the full stack\" section")
        .1
        .split("\n## ")
        .next()
        .unwrap();
    let all_published: Vec<u16> = services
        .as_object()
        .unwrap()
        .values()
        .flat_map(published)
        .map(|p| host_port(&p))
        .collect();
    let mut urls = 0;
    for piece in section.split("localhost:").skip(1) {
        let port: u16 = piece
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a port after localhost:");
        assert!(
            all_published.contains(&port),
            "README's localhost:{port} is not published: {all_published:?}"
        );
        urls += 1;
    }
    assert!(
        urls >= 3,
        "the section names Grafana, Jaeger and Prometheus"
    );
}

/// Where each template of the chart goes among the plain manifests:
/// numbered in the order `kubectl apply -f deploy/kubernetes/` must create
/// them, the Prometheus Operator's objects apart (they need its CRDs).
const MANIFESTS: [(&str, &str); 6] = [
    ("namespace.yaml", "deploy/kubernetes/00-namespace.yaml"),
    (
        "serviceaccount.yaml",
        "deploy/kubernetes/01-serviceaccount.yaml",
    ),
    ("service.yaml", "deploy/kubernetes/02-service.yaml"),
    ("daemonset.yaml", "deploy/kubernetes/03-daemonset.yaml"),
    (
        "podmonitor.yaml",
        "deploy/kubernetes/prometheus-operator/podmonitor.yaml",
    ),
    (
        "servicemonitor.yaml",
        "deploy/kubernetes/prometheus-operator/servicemonitor.yaml",
    ),
];

const MANIFEST_HEADER: &str = "# Generated from the Helm chart deploy/helm/llmtap with\n\
    # deploy/kubernetes/render-values.yaml: edit the chart, then run\n\
    # BLESS=1 cargo test -p llmtap-tests --test stack\n";

/// Writes each rendered template into `dir`; the files and their objects.
fn write_rendered(
    dir: &Path,
    prefix: &str,
    rendered: &std::collections::BTreeMap<String, String>,
) -> (Vec<PathBuf>, Vec<Value>) {
    let mut files = Vec::new();
    let mut objects = Vec::new();
    for (template, text) in rendered {
        let name = Path::new(template).file_name().unwrap().to_str().unwrap();
        let path = dir.join(format!("{prefix}-{name}"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
        objects.extend(yaml_documents(text));
    }
    (files, objects)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{v} is not a string"))
                .to_owned()
        })
        .collect()
}

/// The environment a container spec sets by value, as name/value pairs.
fn container_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// What every variant of the DaemonSet must do: share the node's PID
/// namespace, run with the capabilities llmtap needs and no others (or
/// privileged), with resource requests and limits, and mount tracefs.
fn check_daemonset(daemonset: &Value, values_capabilities: &[String]) {
    let pod = &daemonset["spec"]["template"]["spec"];
    let name = &daemonset["metadata"]["name"];
    assert_eq!(pod["hostPID"], true, "{name}: hostPID");
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    if security["privileged"] != true {
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "{name}"
        );
        let added = strings(&security["capabilities"]["add"]);
        assert_eq!(
            added, values_capabilities,
            "{name}: the values' capabilities"
        );
        for required in REQUIRED_CAPABILITIES {
            assert!(added.iter().any(|c| c == required), "{name}: no {required}");
        }
    }
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][bound][resource].is_string(),
                "{name}: no {bound}.{resource}"
            );
        }
    }
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&"/sys/kernel/tracing"),
        "{name}: {mounts:?}"
    );
    let ports = container["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["name"] == "metrics"), "{name}");
    let metrics_port = ports[0]["containerPort"].as_u64().unwrap();
    let env = container_env(container);
    assert_eq!(
        u64::from(port_of(env_value(&env, "LLMTAP_METRICS_ADDR"))),
        metrics_port,
        "{name}: llmtap listens on the port the pod declares"
    );
}

/// Each monitor selects the DaemonSet's pods (or its Service) and scrapes
/// the port named `metrics`.
fn check_monitors(objects: &[Value]) {
    let pod_labels = &of_kind(objects, "DaemonSet")[0]["spec"]["template"]["metadata"]["labels"];
    let service_labels = &of_kind(objects, "Service")[0]["metadata"]["labels"];
    for (kind, labels, endpoints) in [
        ("PodMonitor", pod_labels, "podMetricsEndpoints"),
        ("ServiceMonitor", service_labels, "endpoints"),
    ] {
        for monitor in of_kind(objects, kind) {
            let selector = monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap();
            for (key, value) in selector {
                assert_eq!(&labels[key], value, "{kind} selects {key}={value}");
            }
            assert_eq!(monitor["spec"][endpoints][0]["port"], "metrics");
        }
    }
}

#[test]
fn the_manifests_and_the_chart_validate_for_kubernetes_1_30_and_later() {
    let values: Value = yaml_documents(&read("deploy/helm/llmtap/values.yaml")).remove(0);
    let default_capabilities = strings(&values["securityContext"]["capabilities"]);

    // The plain manifests are the chart rendered with MANIFEST_VALUES.
    let bless = std::env::var_os("BLESS").is_some();
    let for_manifests =
        helm_template(RELEASE, RELEASE, &[MANIFEST_VALUES]).unwrap_or_else(|e| panic!("{e}"));
    let mut manifest_files = Vec::new();
    let mut manifest_objects = Vec::new();
    for (template, text) in &for_manifests {
        let name = Path::new(template).file_name().unwrap().to_str().unwrap();
        let (_, relative) = MANIFESTS
            .iter()
            .find(|(t, _)| *t == name)
            .unwrap_or_else(|| panic!("{template}: add it to MANIFESTS"));
        let path = workspace_root().join(relative);
        let expected = format!("{MANIFEST_HEADER}{text}");
        if bless {
            std::fs::write(&path, &expected).unwrap();
        }
        assert_eq!(
            read(relative),
            expected,
            "{relative} is not the chart's rendering: BLESS=1 cargo test -p llmtap-tests --test stack"
        );
        manifest_objects.extend(yaml_documents(text));
        manifest_files.push(path);
    }
    assert_eq!(manifest_files.len(), MANIFESTS.len());

    let dir = tempfile::tempdir().unwrap();
    let default = helm_template(RELEASE, "observability", &[]).unwrap_or_else(|e| panic!("{e}"));
    let (default_files, default_objects) = write_rendered(dir.path(), "default", &default);
    let example = helm_template("chat", "llm", &[EXAMPLE_VALUES]).unwrap_or_else(|e| panic!("{e}"));
    let (example_files, example_objects) = write_rendered(dir.path(), "example", &example);

    let files: Vec<PathBuf> = [&manifest_files, &default_files, &example_files]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    for version in ["1.30.0", "1.37.0"] {
        let report = kubernetes_validate(version, &files).unwrap_or_else(|e| panic!("{e}"));
        // Only the Prometheus Operator's kinds lack a schema here.
        for line in report.lines().filter(|l| !l.starts_with("INFO")) {
            assert!(
                line.contains("Couldn't find schema for kind PodMonitor")
                    || line.contains("Couldn't find schema for kind ServiceMonitor"),
                "{line}"
            );
        }
        let passed = report
            .lines()
            .filter(|l| l.contains(" passed for "))
            .count();
        assert_eq!(passed, 4 + 3 + 4, "{report}");
    }
    let monitors: Vec<Value> = [&manifest_objects, &example_objects]
        .into_iter()
        .flatten()
        .filter(|o| o["apiVersion"] == "monitoring.coreos.com/v1")
        .cloned()
        .collect();
    assert_eq!(monitors.len(), 3);
    validate_monitors(&monitors).unwrap_or_else(|e| panic!("{e}"));
    // Not vacuous: a selector that is not a label selector fails.
    let mut broken = monitors[0].clone();
    broken["spec"]["selector"] = "everything".into();
    validate_monitors(&[broken]).expect_err("an invalid monitor must fail");

    for objects in [&manifest_objects, &default_objects, &example_objects] {
        check_daemonset(of_kind(objects, "DaemonSet")[0], &default_capabilities);
        check_monitors(objects);
    }
    // By default the node's containers (and everything else on it) are
    // watched, not a PID.
    let args_of = |objects: &[Value]| {
        strings(
            &of_kind(objects, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]["args"],
        )
    };
    assert_eq!(args_of(&default_objects)[0], "--all");
    assert!(!args_of(&default_objects).contains(&"--pid".to_owned()));
    // The example's values reach the agent.
    let args = args_of(&example_objects).join(" ");
    for expected in [
        "--container 3f4e1b2c9a8d",
        "--exe python3 --exe node",
        "--ring-buffer-kib 16384",
    ] {
        assert!(args.contains(expected), "{expected} not in {args}");
    }
    assert!(!args.contains("--all"), "{args}");
    let example_container =
        &of_kind(&example_objects, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0];
    let env = container_env(example_container);
    for (name, value) in [
        ("LLM_SLOW_REQUEST_THRESHOLD_SECONDS", "2.5"),
        ("LLM_SLOW_TOKEN_RATE_THRESHOLD", "20"),
        ("TELEMETRY_SAMPLE_RATE", "0.25"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://jaeger-collector.observability:4317",
        ),
        ("SERVICE_NAME", "chat-backend"),
        ("LLMTAP_METRICS_ADDR", "0.0.0.0:9500"),
    ] {
        assert_eq!(env_value(&env, name), value);
    }
    assert_eq!(of_kind(&example_objects, "ServiceMonitor").len(), 1);
    assert_eq!(
        of_kind(&example_objects, "Namespace")[0]["metadata"]["name"],
        "llm"
    );
}

/// Capability numbers (linux/capability.h) of those the chart may add.
const CAPABILITY_BITS: [(&str, u32); 8] = [
    ("DAC_READ_SEARCH", 2),
    ("NET_RAW", 13),
    ("SYS_PTRACE", 19),
    ("SYS_ADMIN", 21),
    ("SYS_RESOURCE", 24),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

fn capability_bit(name: &str) -> u32 {
    CAPABILITY_BITS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("capability {name}: add its number"))
        .1
}

#[test]
fn the_daemonsets_agent_captures_calls_with_only_its_capabilities() {
    let _serial = serial();
    let rendered = helm_template(RELEASE, RELEASE, &[]).unwrap_or_else(|e| panic!("{e}"));
    let objects: Vec<Value> = rendered.values().flat_map(|t| yaml_documents(t)).collect();
    let container = &of_kind(&objects, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let capabilities = strings(&container["securityContext"]["capabilities"]["add"]);
    assert_eq!(
        strings(&container["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );

    // The pod mounts the node's tracefs: mount it here if nobody has.
    if !Path::new("/sys/kernel/tracing/events").exists() {
        output_of(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Root with every capability but the pod's, as its container runs:
    // root's capabilities after exec are its bounding set.
    let bounding: Vec<String> = capabilities
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let mut agent = Command::new("setpriv");
    agent
        .arg("--inh-caps=-all")
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .arg(llmtap_bin());
    for (name, value) in container_env(container) {
        agent.env(name, value);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start_with(agent, &args);
    agent.wait_for_log("watching", Duration::from_secs(30));
    let addr = agent.metrics_addr();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapEff");
    let allowed: u64 = capabilities.iter().map(|c| 1u64 << capability_bit(c)).sum();
    assert_eq!(
        effective & !allowed,
        0,
        "the agent has more than the pod's capabilities"
    );
    for required in REQUIRED_CAPABILITIES {
        assert_ne!(
            effective & (1 << capability_bit(required)),
            0,
            "no {required}"
        );
    }

    const CHUNKS: u32 = 6;
    let model = "stack-daemonset";
    let server = tls_mock(CHUNKS, 40, 15);
    curl_call(&server, model, true);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut text = scrape(addr);
    while scraped(
        &text,
        "llm_request_duration_seconds_count",
        &[("model", model)],
    ) != Some(1.0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        text = scrape(addr);
    }
    assert_eq!(
        scraped(
            &text,
            "llm_total_tokens_total",
            &[("model", model), ("token_type", "output")]
        ),
        Some(f64::from(CHUNKS)),
        "{text}"
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(!run.stderr.contains("cannot hook"), "{}", run.stderr);
}

/// The instructions of a Dockerfile, continuation lines joined, comments
/// and parser directives left out: (keyword, arguments).
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|i| {
            let (keyword, args) = i.split_once(char::is_whitespace).unwrap_or((&i, ""));
            (keyword.to_ascii_uppercase(), args.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_image_runs_the_binary_the_tests_run() {
    let instructions = dockerfile_instructions(&read("docker/Dockerfile"));
    let get = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let stages = get("FROM");
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    let build_stage = stages[0].rsplit_once(" AS ").expect("FROM … AS name").1;

    // The build stage builds one package's binary, in release mode.
    let cargo = get("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    let words: Vec<&str> = cargo.split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .map(|i| words[i + 1])
            .unwrap_or_else(|| panic!("{flag} not in {cargo}"))
    };
    assert!(
        words.contains(&"--release") && words.contains(&"--locked"),
        "{cargo}"
    );
    // Without `llmtap demo` and its mock LLM server.
    assert!(words.contains(&"--no-default-features"), "{cargo}");
    let (package, binary) = (after("-p"), after("--bin"));

    // It is the binary the tests run: that package's binary target of the
    // same name as target/debug's llmtap.
    let metadata: Value = serde_json::from_str(
        &output_of(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["metadata", "--no-deps", "--format-version", "1"])
                .current_dir(workspace_root()),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap();
    let targets = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"))["targets"]
        .clone();
    assert!(
        targets
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == binary && strings(&t["kind"]) == ["bin"]),
        "{package} has no binary {binary}"
    );
    assert_eq!(llmtap_bin().file_name().unwrap().to_str(), Some(binary));

    // The runtime stage copies that binary out of the build stage and runs
    // it as the entrypoint, by default as compose runs it.
    let copied = get("COPY")
        .into_iter()
        .find(|c| c.starts_with(&format!("--from={build_stage} ")))
        .expect("a COPY from the build stage");
    let copy: Vec<&str> = copied.split_whitespace().collect();
    assert_eq!(copy[1], format!("/src/target/release/{binary}"));
    let installed = copy[2];
    assert_eq!(get("ENTRYPOINT"), [format!("[\"{installed}\"]")]);
    let compose = compose_config(&[]).unwrap_or_else(|e| panic!("{e}"));
    let (compose_args, compose_env) = container_command(&compose["services"][AGENT_SERVICE]);
    let cmd: Vec<String> = serde_json::from_str(get("CMD")[0]).expect("CMD in exec form");
    assert_eq!(cmd, compose_args);
    // One metrics port everywhere: the image, compose, the chart.
    let image_addr = get("ENV")
        .into_iter()
        .find_map(|e| e.strip_prefix("LLMTAP_METRICS_ADDR="))
        .expect("ENV LLMTAP_METRICS_ADDR");
    let port = port_of(image_addr);
    assert_eq!(get("EXPOSE"), [port.to_string()]);
    assert_eq!(env_value(&compose_env, "LLMTAP_METRICS_ADDR"), image_addr);
    let values: Value = yaml_documents(&read("deploy/helm/llmtap/values.yaml")).remove(0);
    assert_eq!(values["exporters"]["prometheus"]["port"], u64::from(port));
    // The chart's appVersion, the default image tag, is the agent's version.
    let chart = &yaml_documents(&read("deploy/helm/llmtap/Chart.yaml"))[0];
    let version = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap()["version"]
        .clone();
    assert_eq!(chart["appVersion"], version);

    // The build context leaves out build outputs and installed packages.
    let ignored = read("docker/Dockerfile.dockerignore");
    for entry in ["target", "**/node_modules"] {
        assert!(ignored.lines().any(|l| l == entry), "{entry} not ignored");
    }
    let script = workspace_root().join("docker/start-monitoring.sh");
    output_of(Command::new("bash").arg("-n").arg(&script)).unwrap_or_else(|e| panic!("{e}"));
    assert!(read("docker/start-monitoring.sh").contains(
        Path::new(COMPOSE_FILE)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
    ));
}

//! The deployment files (docker/, deploy/) as data, and the offline tools
//! that check them: a compose implementation (`podman-compose config`) and
//! the Compose Specification's schema, Helm's own Go SDK (rendering as
//! `helm template` does), `kubernetes-validate`, `tsc` against
//! `@grafana/schema`. `cargo xtask setup` installs each of them
//! (tests/requirements.txt, tests/package.json).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::workspace_root;

pub const COMPOSE_FILE: &str = "docker/docker-compose-monitoring.yml";
pub const DASHBOARD: &str = "docker/grafana/dashboards/llm-performance.json";
pub const CHART: &str = "deploy/helm/llmtap";

/// A file of the repository, read whole.
pub fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML text, as JSON values; empty documents (a
/// template that rendered nothing) are left out.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{e}:\n{text}")))
        .filter(|value| !value.is_null())
        .collect()
}

/// Runs `command`; its stdout, or `Err` with everything it printed.
pub fn output_of(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown} (cargo xtask setup installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{shown}: {}\n{stdout}{stderr}", output.status))
    }
}

fn python_module(module: &str) -> Command {
    let mut command = Command::new("python3");
    command.args(["-m", module]);
    command
}

/// The compose file as the `podman-compose` implementation resolves it:
/// `${VAR:-default}` interpolated from `env` (nothing else of this
/// process's environment that the file names), services normalised.
pub fn compose_config(env: &[(&str, &str)]) -> Result<Value, String> {
    let file = workspace_root().join(COMPOSE_FILE);
    let named = read(COMPOSE_FILE);
    let mut command = python_module("podman_compose");
    // --dry-run: no podman is needed to read the file.
    command.args(["--dry-run", "-f"]).arg(&file).arg("config");
    for (var, _) in std::env::vars() {
        if named.contains(&format!("${{{var}")) {
            command.env_remove(var);
        }
    }
    command.envs(env.iter().copied());
    let text = output_of(&mut command)?;
    Ok(yaml_documents(&text).remove(0))
}

/// `check-jsonschema` with the Compose Specification's JSON schema (the
/// copy vendored in the package: no network).
pub fn check_compose_schema(file: &Path) -> Result<String, String> {
    output_of(
        python_module("check_jsonschema")
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(file),
    )
}

/// The chart rendered by Helm's Go SDK after a strict lint
/// (tests/tools/helm_template.py), values files merged in order over the
/// chart's defaults: template path → rendered YAML, templates that
/// rendered nothing and NOTES.txt left out.
pub fn helm_template(
    release: &str,
    namespace: &str,
    values: &[&str],
) -> Result<BTreeMap<String, String>, String> {
    let root = workspace_root();
    let mut command = Command::new("python3");
    command
        .arg(root.join("tests/tools/helm_template.py"))
        .arg(root.join(CHART))
        .args([release, namespace])
        .args(values.iter().map(|v| root.join(v)));
    let rendered: BTreeMap<String, String> =
        serde_json::from_str(&output_of(&mut command)?).expect("helm_template prints JSON");
    Ok(rendered
        .into_iter()
        .filter(|(path, text)| path.ends_with(".yaml") && !yaml_documents(text).is_empty())
        .collect())
}

/// `kubernetes-validate --strict` for `version` (unknown properties fail)
/// on every file; its report.
pub fn kubernetes_validate(version: &str, files: &[PathBuf]) -> Result<String, String> {
    output_of(
        python_module("kubernetes_validate")
            .args(["--strict", "-k", version])
            .args(files),
    )
}

/// The Prometheus Operator's objects (PodMonitor, ServiceMonitor), which
/// kubernetes-validate has no schema for, checked against their CRDs'
/// schemas (`@kubernetes-models/prometheus-operator`,
/// tests/tools/validate_monitors.mjs).
pub fn validate_monitors(objects: &[Value]) -> Result<String, String> {
    let mut child = Command::new("node")
        .arg(workspace_root().join("tests/tools/validate_monitors.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (cargo xtask setup installs it)");
    serde_json::to_writer(child.stdin.take().expect("piped"), objects).expect("write objects");
    let output = child.wait_with_output().expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

pub fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel of a dashboard, rows and the panels inside them included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// One PromQL expression of the dashboard, as Prometheus is sent it, and
/// where it comes from.
#[derive(Clone, Debug)]
pub struct DashboardQuery {
    /// The panel's title and refId, or the template variable's name.
    pub source: String,
    /// The expression with Grafana's variables substituted.
    pub promql: String,
}

/// What Grafana's variables become in a query sent outside Grafana: each
/// template variable its "All" value (a regular expression matching any
/// value), the interval variables a range long enough for a whole test run.
const BUILT_IN_VARIABLES: [(&str, &str); 3] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
];

/// Every Prometheus query of the dashboard: each panel target's `expr`,
/// and each query variable's `label_values(SELECTOR, LABEL)` as the
/// PromQL `count by (LABEL) (SELECTOR)`, which has a series per value the
/// variable would offer.
pub fn dashboard_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let variables = &dashboard["templating"]["list"];
    let substitute = |expr: &str| -> String {
        let mut promql = expr.to_owned();
        for (name, value) in BUILT_IN_VARIABLES {
            promql = promql.replace(name, value);
        }
        for variable in variables.as_array().into_iter().flatten() {
            let name = variable["name"].as_str().expect("a variable has a name");
            let all = variable["allValue"].as_str().unwrap_or_else(|| {
                panic!("variable {name} has no allValue: queries cannot be run without Grafana")
            });
            promql = promql
                .replace(&format!("${{{name}}}"), all)
                .replace(&format!("${name}"), all);
        }
        promql
    };
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!(
                    "panel {:?}: a target without expr: {target}",
                    panel["title"]
                )
            });
            queries.push(DashboardQuery {
                source: format!(
                    "panel {:?} {}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                promql: substitute(expr),
            });
        }
    }
    for variable in variables.as_array().into_iter().flatten() {
        let expr = variable["query"].as_str().expect("a query variable");
        let (selector, label) = expr
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .unwrap_or_else(|| panic!("not label_values(SELECTOR, LABEL): {expr}"));
        queries.push(DashboardQuery {
            source: format!("variable {}", variable["name"].as_str().unwrap_or_default()),
            promql: substitute(&format!("count by ({}) ({selector})", label.trim())),
        });
    }
    queries
}

/// The metric names a PromQL expression selects: what is left once string
/// literals, label matchers, ranges, grouping clauses, function calls,
/// keywords and numbers are taken out.
pub fn metric_names(promql: &str) -> Vec<String> {
    const KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "inf"];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let text = strip_enclosed(&strip_enclosed(&strip_strings(promql), '{', '}'), '[', ']');
    let mut names = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':') {
        // A letter inside a number (1e-9) is not a name.
        let preceded_by_digit = rest[..start]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_digit() || c == '.');
        let after = &rest[start..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        let word = &after[..end];
        let tail = after[end..].trim_start();
        rest = &after[end..];
        if preceded_by_digit || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            continue;
        }
        if GROUPING.contains(&word) {
            // Skip the label list that follows.
            if let Some(list) = tail.strip_prefix('(') {
                rest = list.split_once(')').map_or("", |(_, after)| after);
            }
            continue;
        }
        // A function, or an aggregation (`sum by (le) (...)` too).
        let grouped = ["by", "without"].iter().any(|g| {
            tail.strip_prefix(g)
                .is_some_and(|t| t.trim_start().starts_with('('))
        });
        if tail.starts_with('(') || grouped {
            continue;
        }
        names.push(word.to_owned());
    }
    names
}

fn strip_strings(promql: &str) -> String {
    promql
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join("\"\"")
}

fn strip_enclosed(text: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.saturating_sub(1);
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// The metric families a /metrics text declares (`# TYPE`), with a
/// histogram's `_bucket`, `_sum` and `_count` series.
pub fn exported_series_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = declared.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        if kind == "histogram" {
            names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        } else {
            names.push(name.to_owned());
        }
    }
    names
}

/// `@grafana/schema`'s module for each panel type the dashboard uses, and
/// whether that module declares a `FieldConfig` (stat panels have none).
const PANEL_SCHEMAS: [(&str, &str, bool); 4] = [
    ("timeseries", "TimeSeries", true),
    ("heatmap", "Heatmap", true),
    ("table", "Table", true),
    ("stat", "Stat", false),
];

/// A TypeScript module that assigns the dashboard to `@grafana/schema`'s
/// `Dashboard` type, and each panel to `Panel` with its panel type's
/// `Options` and `FieldConfig`. Object literals get TypeScript's excess
/// property checks, so a misspelt or unknown field fails as a wrong type
/// does. `Json<T>` turns the schema's string enums into the unions of
/// their values, which is what JSON holds.
pub fn dashboard_typescript(dashboard: &Value) -> Result<String, String> {
    let mut ts = String::from(
        "import type { Dashboard, Panel, RowPanel } from '@grafana/schema';\n\
         type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T\n\
         \x20 : T extends object ? { [K in keyof T]: Json<T[K]> } : T;\n",
    );
    for (kind, module, _) in PANEL_SCHEMAS {
        ts.push_str(&format!(
            "import type * as {kind} from '@grafana/schema/dist/esm/raw/composable/{kind}/panelcfg/x/{module}PanelCfg_types.gen';\n"
        ));
    }
    ts.push_str(&format!(
        "export const dashboard: Json<Dashboard> = {dashboard:#};\n"
    ));
    for (i, panel) in panels(dashboard).into_iter().enumerate() {
        let kind = panel["type"].as_str().unwrap_or_default();
        let panel_type = if kind == "row" {
            "Json<RowPanel>".to_owned()
        } else {
            let (_, _, has_field_config) = PANEL_SCHEMAS
                .iter()
                .find(|(k, _, _)| *k == kind)
                .ok_or_else(|| {
                    format!("panel type {kind:?}: add its @grafana/schema module to PANEL_SCHEMAS")
                })?;
            let field_config = if *has_field_config {
                format!("{kind}.FieldConfig")
            } else {
                "Record<string, unknown>".to_owned()
            };
            format!("Json<Panel<never, {field_config}> & {{ options?: {kind}.Options }}>")
        };
        ts.push_str(&format!(
            "export const panel{i}: {panel_type} = {panel:#};\n"
        ));
    }
    Ok(ts)
}

/// Type-checks `dashboard_typescript` with `tsc --strict` (typescript and
/// @grafana/schema from tests/node_modules); `Err` holds tsc's report.
pub fn typecheck_dashboard(dashboard: &Value) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_modules = workspace_root().join("tests/node_modules");
    std::os::unix::fs::symlink(&node_modules, dir.path().join("node_modules"))
        .expect("link node_modules");
    std::fs::write(
        dir.path().join("dashboard.ts"),
        dashboard_typescript(dashboard)?,
    )
    .expect("write dashboard.ts");
    std::fs::write(
        dir.path().join("tsconfig.json"),
        r#"{"compilerOptions": {"strict": true, "noEmit": true, "module": "nodenext",
            "moduleResolution": "nodenext", "target": "es2022", "skipLibCheck": true},
            "files": ["dashboard.ts"]}"#,
    )
    .expect("write tsconfig.json");
    output_of(
        Command::new(node_modules.join(".bin/tsc"))
            .args(["-p", "tsconfig.json"])
            .current_dir(dir.path()),
    )
    .map(drop)
}

"""`helm template` through Helm's own Go SDK (the helm-python-sdk wheel, which
carries libhelm): lints the chart (strictly, for Kubernetes 1.30), renders it with the given values files
(merged in order over the chart's defaults, as `-f` does) and prints one
JSON object, template path -> rendered text. Exits 1 on a lint error.

    python3 helm_template.py CHART RELEASE NAMESPACE [VALUES.yaml ...]
"""

import json
import sys

import helm_python as helm
import yaml

# The oldest Kubernetes the manifests are checked against (kubernetes-validate).
KUBE_VERSION = "v1.30.0"
# helm lint's severities: 1 info, 2 warning, 3 error.
WARNING = 2


def merged(files):
    values = {}
    for path in files:
        with open(path) as f:
            deep_merge(values, yaml.safe_load(f) or {})
    return values


def deep_merge(into, new):
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value


def main():
    chart, release, namespace, *value_files = sys.argv[1:]
    values = merged(value_files)
    # Strict: a warning (an unset value a template uses, say) fails too.
    lint = helm.lint(chart, values, strict=True, namespace=namespace, kube_version=KUBE_VERSION)
    if lint["errors"] or any(m["severity"] >= WARNING for m in lint["messages"]):
        print(json.dumps(lint, indent=2), file=sys.stderr)
        sys.exit(1)
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=release, namespace=namespace)
    json.dump(rendered, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

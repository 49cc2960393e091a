#!/usr/bin/env bash
# Makes sure the services the full test suite talks to are up on loopback:
# PostgreSQL 127.0.0.1:5432, Redis 127.0.0.1:6379 and a Kafka-protocol broker
# (tansu) on 127.0.0.1:19092. Idempotent: starts only what is not answering.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

wait_for() { # name, seconds, command...
  local name="$1" secs="$2"; shift 2
  for _ in $(seq 1 $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "services: $name is not answering after ${secs}s" >&2
  return 1
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null; then
    echo "services: PostgreSQL client tools are missing (apt-get install postgresql)" >&2
    return 1
  fi
  if ! pg_up; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  fi
  wait_for PostgreSQL 30 pg_up
}

ensure_redis() {
  if ! command -v redis-server >/dev/null; then
    echo "services: Redis is missing (apt-get install redis-server)" >&2
    return 1
  fi
  if ! redis_up; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_for Redis 30 redis_up
}

case "${1:-up}" in
  up)
    ensure_postgres
    ensure_redis
    "$here/kafka.sh" install
    "$here/kafka.sh" start
    ;;
  down)
    "$here/kafka.sh" stop
    ;;
  *)
    echo "usage: $0 [up|down]" >&2
    exit 2
    ;;
esac

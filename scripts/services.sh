#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672, guest/guest) and Redis (127.0.0.1:6379) answer.
# Idempotent: does nothing when both already answer; starts them when they do not; installs them
# from Debian's packages (apt-get) when they are missing. Binds everything to loopback.
# Used by the README's run and test commands and by .ci/run.
set -euo pipefail

AMQP_HOST=127.0.0.1 AMQP_PORT=5672 REDIS_HOST=127.0.0.1 REDIS_PORT=6379 MGMT_PORT=15672

log() { echo "services: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

redis_up() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
# RabbitMQ accepts TCP before it is ready for AMQP; an AMQP protocol header must be answered.
amqp_up() {
  port_open "$AMQP_HOST" "$AMQP_PORT" || return 1
  python3 - "$AMQP_HOST" "$AMQP_PORT" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"AMQP\x00\x00\x09\x01")
data = s.recv(8)
sys.exit(0 if data[:1] == b"\x01" else 1)  # a Connection.Start method frame
PY
}

# The management HTTP API (127.0.0.1:15672) lets tests create a vhost per test.
mgmt_up() { port_open "$AMQP_HOST" "$MGMT_PORT"; }
ensure_mgmt() {
  mgmt_up && return 0
  log "enabling the rabbitmq_management plugin"
  as_root rabbitmq-plugins -q enable rabbitmq_management >/dev/null 2>&1 || true
  for _ in $(seq 1 150); do mgmt_up && return 0; sleep 0.2; done
  log "the RabbitMQ management API does not answer on $AMQP_HOST:$MGMT_PORT"
  return 1
}

if redis_up && amqp_up && mgmt_up; then
  log "RabbitMQ and Redis already answer"
  exit 0
fi

need=()
if ! redis_up; then command -v redis-server >/dev/null || need+=(redis-server redis-tools); fi
if ! amqp_up; then command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server); fi
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  log "installing ${need[*]} with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! redis_up; then
  log "starting Redis on $REDIS_HOST:$REDIS_PORT"
  mkdir -p /tmp/gatehouse-redis
  redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp/gatehouse-redis --logfile /tmp/gatehouse-redis/redis.log
fi

if ! amqp_up; then
  export RABBITMQ_NODE_IP_ADDRESS=$AMQP_HOST ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} -rabbitmq_management tcp_config [{ip,\"127.0.0.1\"},{port,$MGMT_PORT}]"
  short=$(hostname -s)
  # The node name defaults to rabbit@<short hostname>, which must resolve.
  getent hosts "$short" >/dev/null || echo "127.0.0.1 $short" | as_root tee -a /etc/hosts >/dev/null
  # rabbitmqctl without -n talks to the node rabbitmq-env.conf names (its NODENAME, if set).
  if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ on $AMQP_HOST:$AMQP_PORT"
    as_root env RABBITMQ_NODE_IP_ADDRESS="$RABBITMQ_NODE_IP_ADDRESS" ERL_EPMD_ADDRESS="$ERL_EPMD_ADDRESS" \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS" rabbitmq-server -detached
    as_root rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || true
  fi
fi

for _ in $(seq 1 600); do
  if redis_up && amqp_up; then
    ensure_mgmt || exit 1
    log "up: redis=$REDIS_HOST:$REDIS_PORT amqp=$AMQP_HOST:$AMQP_PORT (guest/guest)"
    exit 0
  fi
  sleep 0.2
done
redis_up || log "Redis does not answer on $REDIS_HOST:$REDIS_PORT"
amqp_up || log "RabbitMQ does not answer on $AMQP_HOST:$AMQP_PORT"
exit 1

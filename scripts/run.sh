#!/usr/bin/env bash
# Runs Gatehouse (the README's run command). Brings up RabbitMQ and Redis first.
# With no DISCORD_TOKEN it runs the demo: a mock gateway replaying recorded traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/services.sh
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/}"
exec cargo run --release --locked -p runtime-tokio --bin gatehouse -- "$@"

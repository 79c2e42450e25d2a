#!/usr/bin/env bash
# Runs every test of Gatehouse: the README's test command, and what .ci/run calls.
# Brings up RabbitMQ and Redis first (scripts/services.sh), then builds once and runs the
# workspace's tests against them.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/services.sh
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

cargo test --workspace --all-targets --locked

#!/usr/bin/env bash
# Runs every test of Gatehouse: the README's test command, and exactly what .ci/run calls.
#
# 1. brings up RabbitMQ and Redis (scripts/services.sh: starts them, installs them if missing),
#    and installs Debian's chromium-headless-shell when missing (the status page is tested in
#    a real headless browser; GATEHOUSE_TEST_BROWSER names another one);
# 2. checks formatting and lints (`cargo fmt --check`, `cargo clippy -D warnings`) and that the
#    conformance suite's optional testcontainers path and the fuzz targets (fuzz/) compile;
# 3. runs the workspace's tests (core, mock gateway, runtimes end to end, suite self-tests);
# 4. runs the conformance suite against both binaries, `gatehouse` (tokio) and
#    `gatehouse-async-std`, for every profile (the `fault-*` and `cluster-*` scenarios apart);
# 5. runs the `fault-*` scenarios (issue 9, RELIABILITY.md) and the `cluster-*` ones (issue 10,
#    README "Cluster mode") shortened to a quarter of their durations
#    (CONFORMANCE_FAULT_SCALE, default 0.25 here; 1 is the full length): the native profile
#    with both binaries, and spectacles (msgpack, one queue per event) with `gatehouse`.
#    The full versions: `CONFORMANCE_FAULT_SCALE=1 target/debug/conformance run --impl
#    target/debug/gatehouse --scenario 'fault-*' --scenario 'cluster-*'`.
# Set GATEHOUSE_TEST_QUICK=1 to skip steps 2, 4 and 5.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/services.sh
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ -z "${GATEHOUSE_TEST_BROWSER:-}" ] && ! command -v chromium-headless-shell >/dev/null; then
  echo "test: installing chromium-headless-shell with apt-get (the status page's browser test)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium-headless-shell >/dev/null
fi
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# No incremental caches: they only cost disk (and CI once ran out of it).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | awk 'NR == 2 { print "test: " $4 " free on the disk of the build" }'
quick="${GATEHOUSE_TEST_QUICK:-}"

step() { printf '\n==> %s\n' "$*"; }

if [ -z "$quick" ]; then
  step "formatting"
  cargo fmt --all -- --check
  step "lints"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  step "the conformance suite's testcontainers path compiles"
  cargo check -p conformance --features testcontainers --locked
  # fuzz/ is a workspace of its own (cargo-fuzz, nightly to run): check its targets on stable
  # so that they cannot rot. Not --locked: its lock file follows proto-core's dependencies.
  step "the fuzz targets compile"
  cargo check --manifest-path fuzz/Cargo.toml --bins
fi

step "workspace tests"
cargo test --workspace --all-targets --locked

if [ -z "$quick" ]; then
  step "conformance suite against both runtimes, every profile"
  cargo build --locked -p runtime-tokio -p runtime-async-std -p conformance
  reports=target/conformance
  mkdir -p "$reports"
  failed=0 passed=0
  for bin in gatehouse gatehouse-async-std; do
    for profile in gatehouse spectacles cordis twilight-dispatch retsu; do
      step "conformance: $bin, profile $profile"
      # Every scenario of the profile but the fault scenarios (step 5).
      selection=()
      while read -r name _; do
        case "$name" in fault-* | cluster-*) ;; *) selection+=(--scenario "$name") ;; esac
      done < <(target/debug/conformance list --profile "$profile")
      if target/debug/conformance run --impl "$PWD/target/debug/$bin" --profile "$profile" \
          --jobs 3 --report "$reports/$bin-$profile.xml" "${selection[@]}"; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
      fi
    done
  done
  export CONFORMANCE_FAULT_SCALE="${CONFORMANCE_FAULT_SCALE:-0.25}"
  for run in gatehouse:gatehouse gatehouse-async-std:gatehouse gatehouse:spectacles; do
    bin=${run%%:*} profile=${run#*:}
    step "fault scenarios: $bin, profile $profile, scale $CONFORMANCE_FAULT_SCALE"
    rm -f "$reports/faults-$bin-$profile.jsonl"
    # Cluster mode is the same under every profile: its scenarios run with the native one.
    cluster=()
    if [ "$profile" = gatehouse ]; then
      cluster=(--scenario 'cluster-*')
    fi
    if CONFORMANCE_FAULT_FIGURES="$reports/faults-$bin-$profile.jsonl" \
        target/debug/conformance run --impl "$PWD/target/debug/$bin" --profile "$profile" \
          --jobs 3 --scenario 'fault-*' "${cluster[@]}" \
          --report "$reports/faults-$bin-$profile.xml"; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
    fi
  done
  step "conformance summary (one line per binary and profile, then per fault run)"
  echo "conformance: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
fi

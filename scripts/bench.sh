#!/usr/bin/env bash
# Builds the release binary and runs the load benchmark against it (examples/bench).
# Extra arguments go to the benchmark, e.g.:
#   scripts/bench.sh --seconds 30 --connections 64
#   scripts/bench.sh --url http://127.0.0.1:8080 --webhook-secret "$WEBHOOK_SECRET" --service-token "$SERVICE_API_TOKEN"
# Scale figures: scripts/bench.sh --scale [--clients 1000000 --ledger 10000000] builds a database
# with examples/gen_data (once, in target/scale/) and runs examples/scale on a copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin crm --example bench --example gen_data --example scale

if [[ "${1:-}" == "--scale" ]]; then
    shift
    clients=1000000
    ledger=10000000
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --clients) clients="$2"; shift 2 ;;
            --ledger) ledger="$2"; shift 2 ;;
            *) echo "unknown option $1" >&2; exit 2 ;;
        esac
    done
    mkdir -p target/scale
    pristine="target/scale/crm-${clients}-${ledger}.db"
    if [[ ! -f "$pristine.done" ]]; then
        # A half-built file from an interrupted run is thrown away.
        rm -f "$pristine" "$pristine-wal" "$pristine-shm"
        target/release/examples/gen_data --out "$pristine" --clients "$clients" --ledger "$ledger"
        touch "$pristine.done"
    fi
    # The scale run adds a staff user and audit entries: measure a copy, keep the original.
    work="target/scale/run.db"
    rm -f "$work" "$work-wal" "$work-shm"
    cp "$pristine" "$work"
    target/release/examples/scale --database "$work"
else
    target/release/examples/bench --dir target "$@"
fi

#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 20 s each), starting from the seeds in
# fuzz/seeds. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept
# them. A crash leaves its input in fuzz/artifacts/<target>/ and fails this script: turn it into
# a regression test, then fix it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -O -s none
for target in $(cargo fuzz list); do
    corpus="$(mktemp -d)"
    cp -r "seeds/$target/." "$corpus/" 2>/dev/null || true
    echo "== fuzzing $target for ${seconds}s"
    cargo fuzz run -O -s none "$target" "$corpus" -- -max_total_time="$seconds" -max_len=65536 2>&1 | tail -n 3
    rm -rf "$corpus"
done

#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the privileged lab tests (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
need_root
ensure_packages
ensure_cargo
# One clean build: incremental caches would only take disk (several GB for this workspace).
export CARGO_INCREMENTAL=0
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free where the build goes"
# Labs left by an interrupted earlier run would make the lab tests fail with "already exists".
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
# The lab tests measure delay and throughput: run test binaries' tests one at a time so they do
# not compete for the 2 cores.
# (Doc tests are not run: the crates have no doc examples, and an empty doc-test run would be the
# last line of the output.)
cargo build --workspace --bins --examples --quiet   # lab tests start wuosd; domain tests domain_init
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --lib --bins --tests -- --test-threads=1 2>&1 | tee "$log"
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ | bc)
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ | bc)
echo "== leftover check"
left=$(ip netns list 2>/dev/null | grep -c '^wuos\.' || true)
if [ "$left" -ne 0 ]; then
    echo "tests left $left wuos namespaces behind:" >&2
    ip netns list | grep '^wuos\.' >&2
    exit 1
fi
echo "== disk: target/ holds $(du -sh target 2>/dev/null | cut -f1), $(df -h --output=avail . | tail -1 | tr -d ' ') free"
echo "$passed passed, $failed failed"

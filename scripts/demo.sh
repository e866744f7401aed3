#!/usr/bin/env bash
# The main demo: installs what it needs, builds wuos, runs `wuos demo voip` (the VoIP scenario).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
need_root
ensure_packages
ensure_cargo
echo "== building wuos (release)"
cargo build --release --quiet -p wuos -p wuosd
exec ./target/release/wuos demo voip "$@"

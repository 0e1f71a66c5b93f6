#!/usr/bin/env bash
# One command: installs wrk and nginx (Debian), builds the release binaries, runs every measurement
# on loopback and prints the tables. Every process it starts is stopped when it ends.
#   BENCH_SECS=5 bench/run.sh        (seconds per wrk run)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet -p ollama-proxy -p ollama-proxy-bench
# 1,000 concurrent streams need a few thousand sockets across the processes.
ulimit -n "$(ulimit -Hn)"
BENCH_ROOT="$root" exec "$root/target/release/bench"

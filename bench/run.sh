#!/usr/bin/env bash
# One command: installs wrk, nginx and Caddy (Debian), builds the release binaries, runs every
# measurement on loopback and prints the tables. Every process it starts is stopped when it ends.
#   BENCH_SECS=5 bench/run.sh        (seconds per wrk run)
#   BENCH_PROXY_BEFORE=/path/to/other/ollama-proxy bench/run.sh   (A/B: that build in the same run)
#   BENCH_ONLY=wake | version        (only the wake release, or only the /api/version table)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts the packaged services; only our own instances may run.
  systemctl stop nginx caddy >/dev/null 2>&1 || true
fi

cargo build --release --quiet -p ollama-proxy -p ollama-proxy-bench
# 1,000 concurrent streams need a few thousand sockets across the processes.
ulimit -n "$(ulimit -Hn)"
BENCH_ROOT="$root" "$root/target/release/bench"
if [[ "${BENCH_ONLY:-}" != wake ]]; then
  "$root/target/release/bench-allocs"
fi

#!/usr/bin/env bash
# Hostile-client limits: installs nginx and Caddy (Debian), builds the release binaries, runs
# bench/limits.py on loopback and prints its table. Takes about 12 minutes (it waits for the servers'
# own timeouts: 60 s, 75 s, and up to 200 s for a server that never closes).
#   BENCH_ONLY=slow,idle,fds,bodies bench/limits.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v prlimit >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the packaged services; only our own instances may run.
systemctl stop nginx caddy >/dev/null 2>&1 || true

cargo build --release --quiet -p ollama-proxy -p ollama-proxy-bench
ulimit -n "$(ulimit -Hn)"
exec python3 "$root/bench/limits.py"

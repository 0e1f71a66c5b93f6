#!/usr/bin/env bash
# User-space instructions per forwarded GET /api/version, counted by callgrind: deterministic where
# wall-clock rounds on a shared VM are not (see BENCHMARKS.md). Kernel time is not counted.
#
#   cargo build --release -p ollama-proxy -p ollama-proxy-bench
#   bench/callgrind.sh [BINARY] [CONNS] [SECS]   # default: target/release/ollama-proxy 16 10
#
# BINARY takes ollama-proxy's --bind/--port/--ollama-url (so bench-floor works too). Symbols for
# `callgrind_annotate` need a build with debug info, e.g. CARGO_PROFILE_RELEASE_DEBUG=1
# CARGO_PROFILE_RELEASE_STRIP=false CARGO_TARGET_DIR=/tmp/prof cargo build --release ...
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/ollama-proxy}
conns=${2:-16}
secs=${3:-10}
command -v valgrind >/dev/null || apt-get install -y -qq valgrind
command -v wrk >/dev/null || apt-get install -y -qq wrk
dir=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
target/release/bench-fake >"$dir/fake" &
pids+=($!)
for _ in $(seq 100); do [[ -s $dir/fake ]] && break; sleep 0.1; done
addr=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["addr"])' "$dir/fake")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CACHE_FILE= RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
  "$bin" --bind 127.0.0.1 --port "$port" --ollama-url "http://$addr" 2>"$dir/valgrind.log" &
vg=$!
pids+=($vg)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/api/version" >/dev/null && break; sleep 0.2; done
wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$port/api/version" >/dev/null
callgrind_control -z "$vg" >/dev/null
n=$(wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$port/api/version" | awk '/requests in/{print $1}')
callgrind_control -d "$vg" >/dev/null
for _ in $(seq 100); do [[ -s $dir/cg.out.1 ]] && break; sleep 0.1; done
sleep 1
total=$(callgrind_annotate "$dir/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "$bin: $n requests, $total instructions, $((total / n)) per request ($conns connections)"
if [[ -n ${KEEP_PROFILE:-} ]]; then cp "$dir/cg.out.1" "$KEEP_PROFILE"; fi

#!/usr/bin/env bash
# Creates target/py-venv with the pinned official clients (idempotent: reinstalls only on change).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/py-venv"
req="$root/tests/py/requirements.txt"
# Tests running in parallel may all ask for the venv: one makes it, the others wait.
mkdir -p "$root/target"
exec 9>"$root/target/.py-venv.lock"
flock 9
if [[ -x "$venv/bin/python" ]] && cmp -s "$req" "$venv/requirements.txt"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$venv/requirements.txt"

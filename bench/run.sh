#!/usr/bin/env bash
# One command for the benchmark (BENCHMARKS.md says what it measures):
# installs what it needs (GNU time, curl, jq, a Python venv with
# azure-identity + azure-keyvault-secrets), builds kvsync and kvsync-fake in
# release mode, then runs bench/bench.py, which writes BENCHMARKS.md.
#
# usage: ./bench/run.sh [--quick] [--runs N] [--sizes 1,10,100,500]
#                       [--latency-kv MS] [--latency-himds MS] [--steady-seconds S]
# Needs root (the Python SDK only accepts Arc challenge files under
# /var/opt/azcmagent/tokens, which the run creates and removes).
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/bench
mkdir -p "$work"

if [ "$(id -u)" != 0 ]; then
    echo "run.sh: needs root (creates /var/opt/azcmagent/tokens for the Python SDK contender)" >&2
    exit 2
fi

missing=()
[ -x /usr/bin/time ] || missing+=(time)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$work/venv/bin/python" -c 'import azure.identity, azure.keyvault.secrets' 2>/dev/null; then
    echo "run.sh: creating $work/venv (azure-identity, azure-keyvault-secrets)" >&2
    rm -rf "$work/venv"
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q --disable-pip-version-check azure-identity azure-keyvault-secrets
fi

echo "run.sh: building release binaries" >&2
cargo build --release --locked -p kvsync -p kvsync-fake >&2

exec python3 bench/bench.py "$@"

#!/usr/bin/env bash
# Shows that `kvsync run` is idle between rounds: no requests and no busy
# wake-ups. Starts the emulator and the agent (interval 1h), waits for the
# first round, then counts the agent's system calls (all threads) and the
# emulator's requests over a quiet window.
#
#   ./scripts/idle-check.sh [SECONDS]     (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-20}
command -v strace >/dev/null || { echo "needs strace (apt-get install strace)"; exit 2; }
cargo build --quiet -p kvsync --bin kvsync && cargo build --quiet -p kvsync-fake --bin kvsync-fake
work=$(mktemp -d)
trap 'kill $agent $fake 2>/dev/null || true; rm -rf "$work"' EXIT
./target/debug/kvsync-fake serve --himds-port 0 --vault-port 0 --state-dir "$work" \
  --secret a=1 --secret b=2 >"$work/fake.log" 2>&1 &
fake=$!
for _ in $(seq 1 100); do grep -q ready "$work/fake.log" 2>/dev/null && break; sleep 0.1; done
himds=$(sed -n 's/.*himds=\([^ ]*\).*/\1/p' "$work/fake.log")
vault=$(sed -n 's/.*vault=\([^ ]*\).*/\1/p' "$work/fake.log")
cat >"$work/kvsync.toml" <<TOML
vault = "$vault"
[agent]
interval = "1h"
jitter = "0s"
[auth]
method = "arc"
identity_endpoint = "$himds/metadata/identity/oauth2/token"
audience = "https://vault.azure.net"
insecure_test_arc_token_dir = "$work/tokens"
[tls]
ca_file = "$work/ca.pem"
[secrets]
a = "a"
b = "b"
[[file]]
path = "$work/out/a"
contents = "{{ secrets.a }}"
[[file]]
path = "$work/out/b"
contents = "{{ secrets.b }}"
TOML
./target/debug/kvsync run -c "$work/kvsync.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 1 100); do grep -q "round complete" "$work/agent.log" 2>/dev/null && break; sleep 0.1; done
grep -q "round complete" "$work/agent.log" || { cat "$work/agent.log"; exit 1; }
before=$(curl -fsS "$himds/admin/counters")
echo "first round done; observing ${window}s of idle time"
timeout "$window" strace -f -c -p "$agent" -o "$work/strace.txt" || true
after=$(curl -fsS "$himds/admin/counters")
echo "--- agent system calls (all threads) during ${window}s idle:"
cat "$work/strace.txt"
echo "--- emulator counters before: $before"
echo "--- emulator counters after:  $after"
[ "$before" = "$after" ] && echo "RESULT: no request to HIMDS or Key Vault while idle"

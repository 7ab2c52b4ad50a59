#!/usr/bin/env bash
# kvsync demo: build kvsync and the bundled Azure emulator, then run the
# real sync end to end against it (fake Arc HIMDS on 127.0.0.1:48342, fake
# Key Vault over HTTPS on localhost:48443). Everything stays on loopback.
#
#   ./demo/run.sh
#
# Writes demo/out/files/{pgpass,app.env}, rotates one secret in the emulator
# and shows that a second run rewrites only what rotated and runs the hook.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/demo/out"
himds_port=48342
vault_port=48443

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Building kvsync and kvsync-fake"
cargo build --quiet -p kvsync --bin kvsync && cargo build --quiet -p kvsync-fake --bin kvsync-fake
bin="$root/target/debug"

rm -rf "$out"
mkdir -p "$out"

step "Starting the local Azure emulator (fake Arc HIMDS + fake Key Vault)"
"$bin/kvsync-fake" serve --himds-port "$himds_port" --vault-port "$vault_port" \
  --state-dir "$out" \
  --secret 'psql-password=demo-pa:ss\word' \
  --secret 'api-key=demo-api-key-1' \
  >"$out/fake.log" 2>&1 &
fake_pid=$!
trap 'kill "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true' EXIT
# Wait for the ready line (bounded: 30 s).
for _ in $(seq 1 300); do
  grep -q 'ready' "$out/fake.log" 2>/dev/null && break
  kill -0 "$fake_pid" 2>/dev/null || { cat "$out/fake.log"; exit 1; }
  sleep 0.1
done
grep -q 'ready' "$out/fake.log" || { echo "emulator did not start"; cat "$out/fake.log"; exit 1; }
sed -n '/ready/p' "$out/fake.log"

admin="http://127.0.0.1:$himds_port/admin"
config="$root/config/demo.toml"

step "kvsync check -c config/demo.toml"
"$bin/kvsync" check -c "$config"

step "kvsync once --dry-run (fetches and renders, writes nothing, prints no value)"
"$bin/kvsync" once -c "$config" --dry-run

step "kvsync once (first run: creates the files, runs the hook once)"
"$bin/kvsync" once -c "$config"

step "Files written (demo values are fake, so we show them)"
ls -l "$out/files"
for f in "$out"/files/*; do echo "--- $f"; cat "$f"; done

step "Rotating psql-password in the emulator (new secret version)"
curl -fsS -X PUT --data-binary 'rotated-pa:ss-2' "$admin/secrets/psql-password"; echo

step "kvsync once (second run: only the pgpass changes; the hook runs for it)"
"$bin/kvsync" once -c "$config"
echo "--- $out/files/pgpass"; cat "$out/files/pgpass"

step "kvsync once (third run: nothing changed, no write, no hook)"
"$bin/kvsync" once -c "$config"

step "Emulator request counters"
curl -fsS "$admin/counters"; echo
step "Demo complete"

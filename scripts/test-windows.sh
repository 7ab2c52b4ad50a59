#!/usr/bin/env bash
# kvsync on Windows, tested here under Wine (issue 11). Called by
# ./scripts/test.sh; runs alone too:
#
#   ./scripts/test-windows.sh
#
# 1. builds target/x86_64-pc-windows-gnu/release/kvsync.exe and the test-only
#    bcryptprimitives.dll shim (scripts/build-windows.sh);
# 2. creates a throwaway Wine prefix with the shim in system32;
# 3. starts the project's emulator (kvsync-fake) natively, with challenge key
#    files created in the prefix's C:\ProgramData\AzureConnectedMachineAgent\Tokens
#    and named by that Windows path;
# 4. runs kvsync.exe against it: check, once (right bytes), once again
#    (nothing rewritten), rotation (one file, its argv hook once), hostile
#    challenges refused with 0 authorized token requests, no value or token
#    in any output at trace level, `mode` on Windows → exit 2 naming `acl`,
#    service install/uninstall (registry key present, then gone);
# 5. runs the library's platform unit tests for Windows under Wine
#    (ACL construction/readback, challenge path checks, replace-with-retry).
#
# What Wine cannot prove (ACL enforcement, reparse points, the real SCM's
# delayed start / failure actions, the Event Log) is listed in
# deploy/windows/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> [windows] %s\n' "$*"; }
fail() { printf 'FAIL [windows]: %s\n' "$*" >&2; exit 1; }

step "build kvsync.exe and the Wine shim"
./scripts/build-windows.sh shim
EXE=$ROOT/target/x86_64-pc-windows-gnu/release/kvsync.exe
[ -f "$EXE" ] || fail "$EXE was not built"

step "build the emulator (native)"
cargo build -q -p kvsync-fake --bin kvsync-fake
FAKE=$ROOT/target/debug/kvsync-fake

WINE=/usr/lib/wine/wine64
WORK=$(mktemp -d /tmp/kvsync-win.XXXXXX)
export WINEPREFIX=$WORK/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
FAKE_PID=""
cleanup() {
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
  WINEPREFIX=$WINEPREFIX /usr/lib/wine/wineserver -k 2>/dev/null || true
  if [ "${KVSYNC_WIN_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step "Wine prefix $WINEPREFIX (+ bcryptprimitives.dll shim)"
"$WINE" wineboot --init >/dev/null 2>&1 || true
/usr/lib/wine/wineserver -w
cp target/windows-shim/bcryptprimitives.dll "$WINEPREFIX/drive_c/windows/system32/"
C=$WINEPREFIX/drive_c
"$WINE" "$EXE" --version | tee "$WORK/version.txt"
grep -q '^kvsync ' "$WORK/version.txt" || fail "kvsync.exe --version"

# kvsync.exe with its stdout/stderr captured (all of it is grepped for
# secrets at the end); prints the exit code.
ALL_OUT=$WORK/all-output.txt
: > "$ALL_OUT"
kv() {
  local out=$WORK/last.out err=$WORK/last.err rc=0
  "$WINE" "$EXE" "$@" >"$out" 2>"$err" || rc=$?
  { echo "--- kvsync $* (exit $rc)"; cat "$out" "$err"; } >> "$ALL_OUT"
  LAST_RC=$rc
}
show_last() { cat "$WORK/last.out" "$WORK/last.err" >&2; }

step "start kvsync-fake (challenge files named C:\\ProgramData\\AzureConnectedMachineAgent\\Tokens\\…)"
TOKENS=$C/ProgramData/AzureConnectedMachineAgent/Tokens
mkdir -p "$TOKENS"
DB_V1="db-CANARY-$RANDOM$RANDOM-one"
DB_V2="db-CANARY-$RANDOM$RANDOM-two"
API_V1="api-CANARY-$RANDOM$RANDOM"
"$FAKE" serve --state-dir "$WORK/fake" --token-dir "$TOKENS" \
  --realm-dir 'C:\ProgramData\AzureConnectedMachineAgent\Tokens' \
  --secret "db-password=$DB_V1" --secret "api-key=$API_V1" \
  > "$WORK/fake.out" 2> "$WORK/fake.err" &
FAKE_PID=$!
for _ in $(seq 1 300); do
  grep -q '^kvsync-fake ready' "$WORK/fake.out" 2>/dev/null && break
  kill -0 "$FAKE_PID" 2>/dev/null || { cat "$WORK/fake.err" >&2; fail "kvsync-fake exited"; }
  sleep 0.1
done
READY=$(grep '^kvsync-fake ready' "$WORK/fake.out") || fail "kvsync-fake not ready"
HIMDS=$(sed -E 's/.* himds=([^ ]+).*/\1/' <<<"$READY")
VAULT=$(sed -E 's/.* vault=([^ ]+).*/\1/' <<<"$READY")
CA=$(sed -E 's/.* ca=([^ ]+).*/\1/' <<<"$READY")
HIMDS=${HIMDS%/}
echo "himds=$HIMDS vault=$VAULT"
counter() { curl -fsS "$HIMDS/admin/counters" | jq -r ".$1"; }
winpath() { printf 'Z:%s' "${1//\//\\}"; }

mkdir -p "$C/ProgramData/kvsync"
CONF=$C/ProgramData/kvsync/kvsync.toml
cat > "$CONF" <<TOML
vault = "$VAULT"

[agent]
deadline = "60s"
hook_timeout = "30s"

[auth]
method = "arc"
identity_endpoint = "$HIMDS/metadata/identity/oauth2/token"
imds_endpoint = "$HIMDS"
audience = "https://vault.azure.net"

[tls]
ca_file = '$(winpath "$CA")'

[secrets]
db = "db-password"
api = "api-key"

[[file]]
path = 'C:\kvsync-out\db\db.txt'
contents = "{{ secrets.db }}"
acl = ["SYSTEM:F", "BUILTIN\\\\Administrators:F", "S-1-5-32-545:R"]
# argv: run directly, no shell
on_change = ['C:\windows\system32\cmd.exe', '/D', '/C', 'echo db-hook>>C:\kvsync-out\hook-db.log']

[[file]]
path = 'C:\kvsync-out\api.txt'
contents = "{{ secrets.api }}"
hook_timeout = "20s"
# string: cmd.exe /D /S /C
on_change = 'echo api-hook>>C:\kvsync-out\hook-api.log'
TOML

step "check (default config path %ProgramData%\\kvsync\\kvsync.toml)"
kv check
[ "$LAST_RC" = 0 ] || { show_last; fail "check exit $LAST_RC"; }
grep -q 'OK' "$WORK/last.out" || { show_last; fail "check did not say OK"; }

export KVSYNC_LOG=trace
step "once: files with the right bytes, each hook once"
kv once
[ "$LAST_RC" = 0 ] || { show_last; fail "once exit $LAST_RC"; }
OUT=$C/kvsync-out
[ "$(cat "$OUT/db/db.txt")" = "$DB_V1" ] || fail "db.txt has the wrong bytes"
[ "$(cat "$OUT/api.txt")" = "$API_V1" ] || fail "api.txt has the wrong bytes"
count() { cat "$1" 2>/dev/null | grep -c "$2" || true; }
hooks() { printf '%s %s' "$(count "$OUT/hook-db.log" db-hook)" "$(count "$OUT/hook-api.log" api-hook)"; }
[ "$(hooks)" = "1 1" ] || fail "hooks after the first once: $(hooks) (want 1 1)"
[ "$(counter himds_challenges)" -ge 1 ] || fail "no HIMDS challenge was answered"
[ "$(counter tokens_issued)" -ge 1 ] || fail "no token issued"
ls "$TOKENS" | grep -q . && fail "a used challenge key file is left in the token dir"
echo "ok: bytes right, hooks ran once each, challenge answered through C:\\ProgramData"

step "once again: nothing rewritten, no hook"
before=$(stat -c '%i %Y' "$OUT/db/db.txt" "$OUT/api.txt")
kv once
[ "$LAST_RC" = 0 ] || { show_last; fail "second once exit $LAST_RC"; }
after=$(stat -c '%i %Y' "$OUT/db/db.txt" "$OUT/api.txt")
[ "$before" = "$after" ] || fail "unchanged files were rewritten ($before -> $after)"
[ "$(hooks)" = "1 1" ] || fail "hooks after the second once: $(hooks) (want 1 1)"
echo "ok: inodes and mtimes unchanged, hooks 1 1"

step "rotation: only db.txt updated, its argv hook ran once"
curl -fsS -X PUT --data-binary "$DB_V2" "$HIMDS/admin/secrets/db-password" >/dev/null
api_before=$(stat -c '%i %Y' "$OUT/api.txt")
kv once
[ "$LAST_RC" = 0 ] || { show_last; fail "rotation once exit $LAST_RC"; }
[ "$(cat "$OUT/db/db.txt")" = "$DB_V2" ] || fail "db.txt not rotated"
[ "$(stat -c '%i %Y' "$OUT/api.txt")" = "$api_before" ] || fail "api.txt rewritten by an unrelated rotation"
[ "$(hooks)" = "2 1" ] || fail "hooks after rotation: $(hooks) (want 2 1)"
ls -a "$OUT" "$OUT/db" | grep -q 'kvsync-.*\.tmp' && fail "temp file left behind"
echo "ok: db.txt rotated, api.txt untouched, hooks 2 1"

step "hostile challenges: refused, 0 authorized token requests"
printf 'x' > "$TOKENS/plain.txt"
head -c 5000 /dev/zero | tr '\0' k > "$TOKENS/big.key"
printf 'HOSTILE-CANARY' > "$C/ProgramData/AzureConnectedMachineAgent/outside.key"
for realm in \
  'C:\windows\win.ini' \
  'C:\ProgramData\AzureConnectedMachineAgent\outside.key' \
  'C:\ProgramData\AzureConnectedMachineAgent\Tokens\..\outside.key' \
  'C:\ProgramData\AzureConnectedMachineAgent\Tokens\plain.txt' \
  'C:\ProgramData\AzureConnectedMachineAgent\Tokens\big.key' \
  "$(winpath "$TOKENS/big.key")"; do
  curl -fsS -X PUT --data-binary "$realm" "$HIMDS/admin/challenge-path" >/dev/null
  curl -fsS -X POST "$HIMDS/admin/counters/reset" >/dev/null
  kv once
  [ "$LAST_RC" = 1 ] || { show_last; fail "hostile realm $realm: exit $LAST_RC (want 1)"; }
  grep -q 'refusing the Azure Arc challenge file' "$WORK/last.err" || { show_last; fail "hostile realm $realm: not refused"; }
  [ "$(counter himds_authorized)" = 0 ] || fail "hostile realm $realm: a key was sent"
  [ "$(counter himds_challenges)" -ge 1 ] || fail "hostile realm $realm: no challenge made"
  echo "ok: refused $realm (himds_authorized=0)"
done
curl -fsS -X DELETE "$HIMDS/admin/challenge-path" >/dev/null
[ "$(cat "$OUT/db/db.txt")" = "$DB_V2" ] || fail "a refused round touched db.txt"
unset KVSYNC_LOG

step "mode on Windows: exit 2 naming acl"
sed 's|^contents = "{{ secrets.api }}"|contents = "{{ secrets.api }}"\nmode = "0600"|' "$CONF" > "$C/ProgramData/kvsync/mode.toml"
kv check -c 'C:\ProgramData\kvsync\mode.toml'
[ "$LAST_RC" = 2 ] || { show_last; fail "check with mode: exit $LAST_RC (want 2)"; }
grep -q 'file\[1\].mode: mode is not supported on Windows; use acl' "$WORK/last.err" || { show_last; fail "check with mode does not name acl"; }
echo "ok: $(grep -m1 'mode is not supported' "$WORK/last.err")"

step "no value, key or token in any output (trace level)"
for canary in "$DB_V1" "$DB_V2" "$API_V1" HOSTILE-CANARY eyJ; do
  if grep -qF -- "$canary" "$ALL_OUT"; then
    grep -nF -- "$canary" "$ALL_OUT" | head -3 >&2
    fail "output contains ${canary:0:6}…"
  fi
done
echo "ok: $(wc -l < "$ALL_OUT") lines of output, no canary"

step "service install / uninstall"
kv service install -c 'C:\ProgramData\kvsync\kvsync.toml'
[ "$LAST_RC" = 0 ] || { show_last; fail "service install exit $LAST_RC"; }
cat "$WORK/last.out" "$WORK/last.err"
KEY='HKLM\System\CurrentControlSet\Services\kvsync'
IMAGE=$("$WINE" reg query "$KEY" /v ImagePath 2>/dev/null | tr -d '\r' | grep ImagePath) || fail "no $KEY ImagePath"
echo "$IMAGE"
grep -qiE 'kvsync\.exe"? run --service -c' <<<"$IMAGE" || fail "ImagePath does not run kvsync.exe run"

step "service start / stop through Wine's service control manager"
"$WINE" net start kvsync || fail "net start kvsync"
# Wine's service manager gives services ProgramData=C:\users\Public (Windows:
# C:\ProgramData), so the log lands there and the service's Arc token dir
# differs from the emulator's: its round refuses the challenge, which is
# the right answer for that directory. What is checked here is the service
# protocol: RUNNING, one round, Stop, exit 0, and the file log.
logs() { find "$C" -path '*/kvsync/logs/kvsync*.log' -exec cat {} + 2>/dev/null; }
for _ in $(seq 1 300); do logs | grep -q 'round complete' && break; sleep 0.1; done
"$WINE" net stop kvsync || fail "net stop kvsync"
for _ in $(seq 1 300); do logs | grep -q 'kvsync service stopped' && break; sleep 0.1; done
logs | cut -c1-160
echo "log file: $(find "$C" -path '*/kvsync/logs/kvsync*.log' | sed "s|^$C|C:|")"
logs | grep -q 'kvsync service running' || fail "the service did not log that it runs"
logs | grep -q 'round complete' || fail "the service ran no round"
logs | grep -q 'kvsync service stopped exit=0' || fail "the service did not stop cleanly on Stop"
for canary in "$DB_V1" "$DB_V2" "$API_V1" eyJ; do
  logs | grep -qF -- "$canary" && fail "the service log contains ${canary:0:6}…"
done
echo "ok: started by the SCM (RUNNING), ran a round, stopped on Stop with exit 0, file log written"

kv service uninstall
[ "$LAST_RC" = 0 ] || { show_last; fail "service uninstall exit $LAST_RC"; }
cat "$WORK/last.out" "$WORK/last.err"
if "$WINE" reg query "$KEY" >/dev/null 2>&1; then fail "$KEY still present after uninstall"; fi
echo "ok: $KEY present after install, gone after uninstall"

# The library's unit tests built for Windows and run under Wine (ACL
# construction/read-back, challenge path checks, replace-with-retry, key
# descriptors, http.sys structures). Opt-in: the test build recompiles std
# and every dependency for the test harness (~15 min on 2 cores), which would
# push CI past its 40-minute budget; the same logic's pure parts run on
# Linux in `cargo test`. KVSYNC_WIN_UNIT_TESTS=1 runs them.
if [ "${KVSYNC_WIN_UNIT_TESTS:-0}" = 1 ]; then
  step "platform unit tests for Windows under Wine"
  KVSYNC_WIN_TEST_FILTER="platform:: store:: keyacl httpsys" ./scripts/build-windows.sh test
fi

step "MSI and zip"
./scripts/package-windows.sh

step "Windows tests passed"

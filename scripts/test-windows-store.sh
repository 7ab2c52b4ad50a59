#!/usr/bin/env bash
# `[[store]]` (issue 12) under Wine: kvsync.exe puts a Key Vault certificate
# into LocalMachine\My, its intermediate into LocalMachine\CA, links renewals
# and trims old versions. Called by ./scripts/test.sh (after
# scripts/test-windows.sh); runs alone too:
#
#   ./scripts/test-windows-store.sh
#
# Checks, against the project's emulator (kvsync-fake):
#  1. `once`: the leaf's thumbprint is in HKLM\...\SystemCertificates\My with
#     its key, the intermediate in CA, nothing new in Root; the hook ran once
#     with KVSYNC_CHANGED = the thumbprint;
#  2. a second `once`: the store's registry unchanged, no hook;
#  3. rotation: the new thumbprint added, the old one carries
#     CERT_RENEWAL_PROP_ID (64) = the new SHA-1 (parsed from the registry
#     Blob), the hook ran once with the new thumbprint;
#  4. `keep = 2` exceeded: the oldest is gone;
#  5. `--dry-run` names the thumbprints it would add/remove and changes
#     nothing.
#  6. IIS Centralized Certificate Store output (`[[file]] ccs = true`, item 3):
#     a certificate with SANs a.example, b.example, *.example gives
#     a.example.pfx, b.example.pfx, _.example.pfx in a C:\ directory, each
#     opened by `openssl pkcs12` with the CCS password and holding the leaf
#     (serial equal) and its key; a rotation that drops b.example removes
#     b.example.pfx and leaves a foreign file untouched.
# What Wine cannot prove (the key's DACL, http.sys bindings) is covered by
# unit tests of the structures kvsync builds (src/store/*, and under Wine
# src/platform/windows/{keyacl,httpsys}.rs tests); see deploy/windows/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> [windows-store] %s\n' "$*"; }
fail() { printf 'FAIL [windows-store]: %s\n' "$*" >&2; exit 1; }

if [ "${KVSYNC_SKIP_BUILD:-0}" != 1 ]; then
  step "build kvsync.exe and the Wine shim"
  ./scripts/build-windows.sh shim
  cargo build -q -p kvsync-fake --bin kvsync-fake
fi
EXE=$ROOT/target/x86_64-pc-windows-gnu/release/kvsync.exe
FAKE=$ROOT/target/debug/kvsync-fake
[ -f "$EXE" ] && [ -x "$FAKE" ] || fail "kvsync.exe or kvsync-fake missing"

WINE=/usr/lib/wine/wine64
WORK=$(mktemp -d /tmp/kvsync-winstore.XXXXXX)
export WINEPREFIX=$WORK/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
FAKE_PID=""
cleanup() {
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
  /usr/lib/wine/wineserver -k 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step "Wine prefix (+ bcryptprimitives.dll shim)"
"$WINE" wineboot --init >/dev/null 2>&1 || true
/usr/lib/wine/wineserver -w
cp target/windows-shim/bcryptprimitives.dll "$WINEPREFIX/drive_c/windows/system32/"
C=$WINEPREFIX/drive_c

kv() {
  local rc=0
  "$WINE" "$EXE" "$@" >"$WORK/last.out" 2>"$WORK/last.err" || rc=$?
  LAST_RC=$rc
}
show_last() { cat "$WORK/last.out" "$WORK/last.err" >&2; }

step "start kvsync-fake"
TOKENS=$C/ProgramData/AzureConnectedMachineAgent/Tokens
mkdir -p "$TOKENS"
"$FAKE" serve --state-dir "$WORK/fake" --token-dir "$TOKENS" \
  --realm-dir 'C:\ProgramData\AzureConnectedMachineAgent\Tokens' \
  > "$WORK/fake.out" 2> "$WORK/fake.err" &
FAKE_PID=$!
for _ in $(seq 1 300); do
  grep -q '^kvsync-fake ready' "$WORK/fake.out" 2>/dev/null && break
  kill -0 "$FAKE_PID" 2>/dev/null || { cat "$WORK/fake.err" >&2; fail "kvsync-fake exited"; }
  sleep 0.1
done
READY=$(grep '^kvsync-fake ready' "$WORK/fake.out") || fail "kvsync-fake not ready"
HIMDS=$(sed -E 's/.* himds=([^ ]+).*/\1/' <<<"$READY"); HIMDS=${HIMDS%/}
VAULT=$(sed -E 's/.* vault=([^ ]+).*/\1/' <<<"$READY")
CA=$(sed -E 's/.* ca=([^ ]+).*/\1/' <<<"$READY")
winpath() { printf 'Z:%s' "${1//\//\\}"; }
issue() { curl -fsS -X POST -H 'content-type: application/json' -d '{"subject":"www.contoso.example","sans":["www.contoso.example"]}' "$HIMDS/admin/certificates/site" | jq -r .thumbprint; }

T1=$(issue)
echo "issued site v1: $T1"

mkdir -p "$C/ProgramData/kvsync" "$C/kvsync-out"
CONF=$C/ProgramData/kvsync/kvsync.toml
cat > "$CONF" <<TOML
vault = "$VAULT"

[agent]
deadline = "60s"

[auth]
method = "arc"
identity_endpoint = "$HIMDS/metadata/identity/oauth2/token"
imds_endpoint = "$HIMDS"
audience = "https://vault.azure.net"

[tls]
ca_file = '$(winpath "$CA")'

[secrets]
site = { name = "site", type = "certificate" }

[[store]]
secret = "site"
location = "LocalMachine"
name = "My"
keep = 2
# argv hook: KVSYNC_CHANGED is the new thumbprint
on_change = ['C:\windows\system32\cmd.exe', '/D', '/C', 'echo %KVSYNC_CHANGED%>>C:\kvsync-out\store-hook.log']
TOML

REG='HKLM\Software\Microsoft\SystemCertificates'
thumbs() { { "$WINE" reg query "$REG\\$1\\Certificates" 2>/dev/null || true; } | tr -d '\r' | sed -nE 's/.*\\Certificates\\([0-9A-Fa-f]{40})$/\1/p' | tr a-f A-F | sort; }
# The certificate's serialized properties (the Blob value) as one hex string.
blob() { { "$WINE" reg query "$REG\\My\\Certificates\\$1" /v Blob 2>/dev/null || true; } | tr -d '\r' | sed -nE 's/.*REG_BINARY[[:space:]]+([0-9A-Fa-f]+).*/\1/p'; }
# Property $2 (decimal id) of certificate $1, hex, from the Blob: a list of
# (id u32, encoding u32, length u32, data) little-endian elements.
prop() {
  python3 - "$(blob "$1")" "$2" <<'PY'
import struct, sys
b = bytes.fromhex(sys.argv[1]); want = int(sys.argv[2]); i = 0
while i + 12 <= len(b):
    pid, _enc, n = struct.unpack_from('<III', b, i); i += 12
    if pid == want: print(b[i:i+n].hex().upper()); break
    i += n
PY
}
# A string property (UTF-16LE with its NUL) of certificate $1.
propstr() { python3 -c 'import sys; print(bytes.fromhex(sys.argv[1]).decode("utf-16-le").rstrip("\0"))' "$(prop "$1" "$2")"; }
hooklog() { tr -d '\r ' < "$C/kvsync-out/store-hook.log" 2>/dev/null || true; }

step "dry run: names the thumbprint it would add, changes nothing"
kv once --dry-run
[ "$LAST_RC" = 0 ] || { show_last; fail "dry run exit $LAST_RC"; }
grep -q "would add to LocalMachine\\\\My: $T1 (site)" "$WORK/last.out" || { show_last; fail "dry run does not name $T1"; }
[ -z "$(thumbs My)" ] || fail "dry run changed My"
cat "$WORK/last.out"
# Wine fills LocalMachine\Root lazily (~150 host roots) the first time a
# program verifies a TLS chain, which the dry run just did: take the
# before-picture of Root and CA now.
ROOT_BEFORE=$(thumbs Root)
CA_BEFORE=$(thumbs CA)

step "once: leaf in My with its key, intermediate in CA, nothing in Root, hook once"
kv once
[ "$LAST_RC" = 0 ] || { show_last; fail "once exit $LAST_RC"; }
[ "$(thumbs My)" = "$T1" ] || fail "My holds '$(thumbs My)', want $T1"
[ -n "$(prop "$T1" 2)" ] || fail "$T1 has no key (CERT_KEY_PROV_INFO_PROP_ID)"
NEW_CA=$(comm -13 <(echo "$CA_BEFORE") <(thumbs CA))
[ "$(echo "$NEW_CA" | grep -c .)" = 1 ] || fail "want exactly one new CA certificate, got '$NEW_CA'"
[ "$(thumbs Root)" = "$ROOT_BEFORE" ] || fail "Root changed"
thumbs Root | grep -qx -e "$T1" -e "$NEW_CA" && fail "the leaf or the intermediate is in Root"
[ "$(hooklog)" = "$T1" ] || fail "hook log '$(hooklog)', want $T1"
[ "$(propstr "$T1" 13)" = "kvsync:site" ] || fail "description of $T1 is '$(propstr "$T1" 13)'"
propstr "$T1" 11 | grep -qE '^kvsync site [0-9]{4}-[0-9]{2}-[0-9]{2}' || fail "friendly name of $T1 is '$(propstr "$T1" 11)'"
echo "ok: friendly name '$(propstr "$T1" 11)', description '$(propstr "$T1" 13)'"
echo "ok: My=$T1 (key present), CA+=$NEW_CA, Root unchanged ($(echo "$ROOT_BEFORE" | grep -c .) certificates), hook ran once with $T1"

step "second once: nothing changes, no hook"
SNAP=$("$WINE" reg query "$REG\\My" /s 2>/dev/null | tr -d '\r')
kv once
[ "$LAST_RC" = 0 ] || { show_last; fail "second once exit $LAST_RC"; }
[ "$("$WINE" reg query "$REG\\My" /s 2>/dev/null | tr -d '\r')" = "$SNAP" ] || fail "the My store changed"
[ "$(hooklog)" = "$T1" ] || fail "a hook ran: '$(hooklog)'"
echo "ok: registry of My identical, hook log unchanged"

step "rotation: new thumbprint added, old one linked to it, hook once"
T2=$(issue)
kv once
[ "$LAST_RC" = 0 ] || { show_last; fail "rotation once exit $LAST_RC"; }
[ "$(thumbs My)" = "$(printf '%s\n' "$T1" "$T2" | sort)" ] || fail "My holds '$(thumbs My)', want $T1 and $T2"
[ "$(prop "$T1" 64)" = "$T2" ] || fail "renewal property of $T1 is '$(prop "$T1" 64)', want $T2"
[ "$(hooklog | tr '\n' ' ')" = "$T1 $T2 " ] || fail "hook log '$(hooklog)'"
echo "ok: My={$T1,$T2}, $T1 renewal -> $(prop "$T1" 64), hook ran once with $T2"

step "keep = 2 exceeded: the oldest is gone"
T3=$(issue)
kv once --dry-run
grep -q "would remove from LocalMachine\\\\My: $T1" "$WORK/last.out" || { show_last; fail "dry run does not say it would remove $T1"; }
kv once
[ "$LAST_RC" = 0 ] || { show_last; fail "third rotation exit $LAST_RC"; }
[ "$(thumbs My)" = "$(printf '%s\n' "$T2" "$T3" | sort)" ] || fail "My holds '$(thumbs My)', want $T2 and $T3"
[ "$(prop "$T2" 64)" = "$T3" ] || fail "renewal property of $T2 is '$(prop "$T2" 64)', want $T3"
[ "$(hooklog | tr '\n' ' ')" = "$T1 $T2 $T3 " ] || fail "hook log '$(hooklog)'"
echo "ok: $T1 removed, My={$T2,$T3}, hooks $T1 $T2 $T3"

step "CCS: one PFX per DNS name under Wine; a dropped name's file removed, a foreign file kept"
ccs_issue() {
  curl -fsS -X POST -H 'content-type: application/json' -d "{\"subject\":\"a.example\",\"sans\":$1}" "$HIMDS/admin/certificates/ccs" | jq -r .serial | tr a-f A-F
}
S1=$(ccs_issue '["a.example","b.example","*.example"]')
echo "issued ccs v1: serial $S1"
curl -fsS -X PUT --data-binary 'Pa55-ccs' "$HIMDS/admin/secrets/ccs-password" >/dev/null
CCS_DIR=$C/kvsync-out/ccs
mkdir -p "$CCS_DIR"
echo foreign > "$CCS_DIR/foreign.txt"
CCS_CONF=$C/ProgramData/kvsync/ccs.toml
sed -n '1,/^\[secrets\]/p' "$CONF" > "$CCS_CONF"
cat >> "$CCS_CONF" <<'TOML'
ccs = { name = "ccs", type = "certificate" }
ccs_password = "ccs-password"

[[file]]
secret = "ccs"
format = "pfx"
ccs = true
path = 'C:\kvsync-out\ccs'
pfx_password = "ccs_password"
TOML
serial_of() { openssl pkcs12 -in "$1" -passin pass:Pa55-ccs -nokeys -clcerts 2>/dev/null | openssl x509 -noout -serial | cut -d= -f2; }
check_pfx() {
  local f=$CCS_DIR/$1
  [ -f "$f" ] || fail "$1 missing in the CCS directory ($(ls -A "$CCS_DIR" | tr '\n' ' '))"
  openssl pkcs12 -in "$f" -passin pass:Pa55-ccs -nodes 2>/dev/null | grep -q 'PRIVATE KEY' || fail "$1 holds no key (or the password does not open it)"
  [ "$(serial_of "$f")" = "$2" ] || fail "$1 serial $(serial_of "$f"), want $2"
}
kv once -c 'C:\ProgramData\kvsync\ccs.toml'
[ "$LAST_RC" = 0 ] || { show_last; fail "ccs once exit $LAST_RC"; }
for n in a.example.pfx b.example.pfx _.example.pfx; do check_pfx "$n" "$S1"; done
echo "ok: $(ls -A "$CCS_DIR" | tr '\n' ' ')— each opened with the CCS password, key present, serial $S1 (the emulator's)"
S2=$(ccs_issue '["a.example","*.example"]')
kv once -c 'C:\ProgramData\kvsync\ccs.toml'
[ "$LAST_RC" = 0 ] || { show_last; fail "ccs rotation exit $LAST_RC"; }
[ ! -e "$CCS_DIR/b.example.pfx" ] || fail "b.example.pfx was not removed"
[ "$(cat "$CCS_DIR/foreign.txt")" = foreign ] || fail "the foreign file was touched"
[ "$S2" != "$S1" ] || fail "the emulator issued the same serial twice"
for n in a.example.pfx _.example.pfx; do check_pfx "$n" "$S2"; done
echo "ok: rotation to serial $S2 removed b.example.pfx, kept foreign.txt"

echo
echo "windows-store: all checks passed"

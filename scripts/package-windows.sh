#!/usr/bin/env bash
# Package kvsync.exe for Windows: an MSI (wixl, from windows/msi/kvsync.wxs)
# and a zip, then check the MSI's tables with msiinfo. Needs the exe from
# ./scripts/build-windows.sh.
#
#   ./scripts/package-windows.sh   # -> target/windows-pkg/kvsync-<version>-x64.msi / .zip
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
EXE_DIR=target/x86_64-pc-windows-gnu/release
[ -f "$EXE_DIR/kvsync.exe" ] || { echo "build kvsync.exe first: ./scripts/build-windows.sh" >&2; exit 1; }
for tool in wixl msiinfo zip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool (./scripts/build-windows.sh installs it)" >&2; exit 1; }
done
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
OUT=target/windows-pkg
mkdir -p "$OUT"
MSI=$OUT/kvsync-$VERSION-x64.msi
ZIP=$OUT/kvsync-$VERSION-x86_64-windows.zip

echo "==> wixl -> $MSI"
# wixl resolves sources relative to the working directory (absolute paths
# are rejected).
wixl -a x64 -D Version="$VERSION" -D ExeDir="$EXE_DIR" -D SrcDir=. \
  -o "$MSI" windows/msi/kvsync.wxs
# The example config and templates: NeverOverwrite (128) + Permanent (16) +
# 64-bit (256), which wixl has no attributes for.
for c in ExampleConfig Templates; do
  msibuild "$MSI" -q "UPDATE \`Component\` SET \`Attributes\` = 400 WHERE \`Component\` = '$c'"
done

echo "==> zip -> $ZIP"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/kvsync/templates"
cp "$EXE_DIR/kvsync.exe" deploy/windows/Import-KvsyncPfx.ps1 deploy/windows/README.md "$STAGE/kvsync/"
cp deploy/windows/kvsync.toml "$STAGE/kvsync/kvsync.example.toml"
cp templates/*.tera "$STAGE/kvsync/templates/"
rm -f "$ZIP"
(cd "$STAGE" && zip -qr "$ROOT/$ZIP" kvsync)

echo "==> msiinfo: files, service, Event Log source"
fail() { echo "FAIL [msi]: $*" >&2; exit 1; }
files=$(msiinfo export "$MSI" File)
echo "$files" | cut -f1-4
for f in kvsync.exe kvsync.toml Import-KvsyncPfx.ps1 app.env.tera pgpass.tera; do
  grep -q "	$f	" <<<"$files" || fail "$f not in the File table"
done
dirs=$(msiinfo export "$MSI" Directory)
grep -q "ProgramFiles64Folder" <<<"$dirs" && grep -q "CommonAppDataFolder" <<<"$dirs" || fail "directories"
svc=$(msiinfo export "$MSI" ServiceInstall)
echo "$svc" | tail -n +4
grep -q "^KvsyncService	kvsync	" <<<"$svc" || fail "no kvsync ServiceInstall"
grep -q 'run --service -c' <<<"$svc" || fail "service arguments"
ctl=$(msiinfo export "$MSI" ServiceControl)
echo "$ctl" | tail -n +4
# Event bits: 1 start on install, 16 start on uninstall: neither (not started).
event=$(awk -F'\t' '$1=="KvsyncServiceControl"{print $3}' <<<"$ctl")
[ -n "$event" ] && [ $((event & 17)) = 0 ] || fail "the MSI would start the service (Event=$event)"
comp=$(msiinfo export "$MSI" Component)
awk -F'\t' '$1=="ExampleConfig"||$1=="Templates"{print $1, "attributes", $4}' <<<"$comp"
# msidbComponentAttributesPermanent 16 | NeverOverwrite 128.
for c in ExampleConfig Templates; do
  a=$(awk -F'\t' -v c="$c" '$1==c{print $4}' <<<"$comp")
  [ $((a & 144)) = 144 ] || fail "$c is not NeverOverwrite+Permanent ($a)"
done
msiinfo export "$MSI" Registry | grep -q 'EventLog\\Application\\kvsync' || fail "no Event Log source"
unzip -l "$ZIP"
ls -l "$MSI" "$ZIP"
echo "==> MSI and zip OK"

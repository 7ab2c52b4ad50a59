#!/usr/bin/env bash
# Build kvsync for Windows (x86_64-pc-windows-gnu) on Debian, with Debian's
# Rust packages (the rustup toolchain here has no Windows standard library):
#
#   ./scripts/build-windows.sh            # -> target/x86_64-pc-windows-gnu/release/kvsync.exe
#   ./scripts/build-windows.sh shim       # also -> target/windows-shim/bcryptprimitives.dll
#   ./scripts/build-windows.sh test       # also `cargo test --lib` for Windows, run under Wine
#
# Installs the Debian packages it needs when missing (rustc-web cargo-web
# rust-web-src gcc-mingw-w64-x86-64 wine64 msitools wixl). The standard
# library is built from source (-Zbuild-std, RUSTC_BOOTSTRAP=1) into its own
# target directory (target/windows-build) so the rustup and Debian compilers
# never share artefacts; that directory is the cache to keep between CI runs.
#
# Release profile: no LTO and 16 codegen units unless KVSYNC_WIN_FULL_LTO=1
# (whole-program LTO of the Windows build costs many minutes on a 2-core CI
# machine; the shipped Linux profile is unchanged).
set -euo pipefail
cd "$(dirname "$0")/.."

TRIPLE=x86_64-pc-windows-gnu
BUILD_DIR=${KVSYNC_WIN_TARGET_DIR:-target/windows-build}
OUT_DIR=target/$TRIPLE/release
CARGO=/usr/bin/cargo

need_pkgs=()
[ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] || need_pkgs+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || need_pkgs+=(rust-web-src)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need_pkgs+=(gcc-mingw-w64-x86-64)
[ -x /usr/lib/wine/wine64 ] || need_pkgs+=(wine64)
command -v msiinfo >/dev/null 2>&1 || need_pkgs+=(msitools)
command -v wixl >/dev/null 2>&1 || need_pkgs+=(wixl)
command -v zip >/dev/null 2>&1 || need_pkgs+=(zip)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> Installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

export RUSTC_BOOTSTRAP=1
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
if [ "${KVSYNC_WIN_FULL_LTO:-0}" != 1 ]; then
  export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
cargo_win() {
  "$CARGO" "$@" -Zbuild-std=std,panic_unwind --target "$TRIPLE" --target-dir "$BUILD_DIR"
}

build_shim() {
  mkdir -p target/windows-shim
  x86_64-w64-mingw32-gcc -shared -O2 -o target/windows-shim/bcryptprimitives.dll \
    windows/shim/bcryptprimitives.c windows/shim/bcryptprimitives.def -lbcrypt
}

case "${1:-exe}" in
  check)
    cargo_win check --lib --bins
    exit 0
    ;;
  exe | shim | test) ;;
  *) echo "usage: $0 [exe|shim|test|check]" >&2; exit 2 ;;
esac

echo "==> cargo build --release --target $TRIPLE (kvsync.exe)"
cargo_win build --release --bin kvsync
mkdir -p "$OUT_DIR"
cp "$BUILD_DIR/$TRIPLE/release/kvsync.exe" "$OUT_DIR/kvsync.exe"
echo "built $OUT_DIR/kvsync.exe"

if [ "${1:-exe}" != exe ]; then
  build_shim
  echo "built target/windows-shim/bcryptprimitives.dll"
fi

if [ "${1:-exe}" = test ]; then
  # Unit tests of the library (the platform layer among them) under Wine.
  # --release reuses the dependencies just built for kvsync.exe.
  : "${WINEPREFIX:?set WINEPREFIX to a prefix patched with the shim (scripts/test-windows.sh does)}"
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=/usr/lib/wine/wine64
  export WINEDEBUG=${WINEDEBUG:--all}
  cargo_win test --release --lib -- --test-threads=2 ${KVSYNC_WIN_TEST_FILTER:-}
fi

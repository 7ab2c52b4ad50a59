#!/usr/bin/env bash
# Bounded fuzz run of every cargo-fuzz target in fuzz/ (issue 13): each
# target runs SECONDS (default 20) from a scratch copy of its seed corpus
# (fuzz/corpus, the emulator's real answers), so the checked-in corpus stays
# as it is. A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/. Needs the nightly toolchain and cargo-fuzz; if
# nightly is missing the run is skipped with a message (CI machines have it).
#
#   ./scripts/fuzz.sh            # every target, 20 s each
#   ./scripts/fuzz.sh 60 pfx     # one target, 60 s
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
# Same dependency versions as the main workspace.
cp ../Cargo.lock Cargo.lock
cargo +nightly fuzz build -O >/dev/null
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  cp -r "corpus/$t/." "$scratch/$t/" 2>/dev/null || true
  start=$(date +%s)
  cargo +nightly fuzz run -O "$t" "$scratch/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 2>"$scratch/$t.log" \
    || { tail -40 "$scratch/$t.log"; echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)"; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t.log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $t: $(( $(date +%s) - start )) s, $runs runs, no crash"
done

#!/usr/bin/env bash
# Coverage-guided fuzzing: every cargo-fuzz target in fuzz/ (libFuzzer), each for a bounded
# time, on the stable toolchain (`--sanitizer none`: safe Rust needs no AddressSanitizer, and
# the sanitizers are what would need nightly). Panics, failed checks, inputs that take over
# 10 s and runs over 2 GiB all count as crashes.
#
#   scripts/fuzz.sh                  # every target, 30 s each
#   scripts/fuzz.sh --time 3600      # longer, as before a release
#   scripts/fuzz.sh --time 600 config_json
#
# Each target starts from its seeds (fuzz/seeds/<target>/) and from what earlier runs on this
# machine found (fuzz/corpus/<target>/, not committed). A crash leaves its input in
# fuzz/artifacts/<target>/ and the script fails; fix the bug, then copy the input into
# fuzz/regressions/<target>/, where tests/fuzz_regressions.rs replays it on every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) seconds=${2:?--time needs a number of seconds}; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
case $seconds in
  ''|*[!0-9]*|0) echo "fuzz.sh: --time takes a whole number of seconds, at least 1" >&2; exit 2 ;;
esac

# cargo-fuzz, pinned, in the checkout (like .release-tools/): nothing installed system-wide.
cargo_fuzz_version=0.13.2
tools=$PWD/.fuzz-tools
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
  echo "fuzz.sh: installing cargo-fuzz $cargo_fuzz_version into $tools" >&2
  cargo install --quiet --locked --root "$tools" --version "$cargo_fuzz_version" cargo-fuzz
fi
export PATH="$tools/bin:$PATH"

if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
# One build for every target (the crate, instrumented, once).
cargo fuzz build --sanitizer none
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz.sh: $t for ${seconds}s" >&2
  # The whole output to a log; on screen only libFuzzer's summary (its progress lines are
  # thousands) or, on a failure, the end of the log.
  log=fuzz/artifacts/$t.log
  mkdir -p fuzz/artifacts
  set +e
  cargo fuzz run --sanitizer none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    if grep -q 'Test unit written to' "$log"; then
      echo "fuzz.sh: $t found a crash; its input is in fuzz/artifacts/$t/ (whole output: $log)" >&2
    else
      echo "fuzz.sh: cargo fuzz run $t failed (exit $status) before fuzzing; whole output: $log" >&2
    fi
    exit 1
  fi
  grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$log" | sed 's/^/  /'
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2

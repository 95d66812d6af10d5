#!/usr/bin/env bash
# Wall time and peak memory of one `affine-authentik blueprint` run, against the goals of
# issue 2: median under 5 ms, peak resident memory under 10 MB.
#
#   scripts/bench-blueprint.sh                 # RUNS=300 by default
#   HYPERFINE=none scripts/bench-blueprint.sh  # force the plain loop
#
# Wall time: hyperfine when installed (apt-get install -y hyperfine), else a plain loop
# timed with bash's $EPOCHREALTIME; the median either way. Peak memory: GNU time's
# "Maximum resident set size" (apt-get install -y time), the largest of a few runs.
# Exits 1 when a goal is missed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-300}
goal_ms=5
goal_kb=$((10 * 1024))

cargo build --release --locked --quiet
bin="$PWD/target/release/affine-authentik"
args=(blueprint --affine-url https://affine.example.com)
# The benchmark must not depend on the caller's environment.
unset AFFINE_URL AFFINE_OIDC_CLIENT_SECRET
"$bin" "${args[@]}" >/dev/null

hyperfine=${HYPERFINE:-hyperfine}
if command -v "$hyperfine" >/dev/null 2>&1; then
  json=$(mktemp)
  trap 'rm -f "$json"' EXIT
  # -N: no shell between hyperfine and the binary, so the shell's start-up is not measured.
  "$hyperfine" -N --style none --warmup 20 --runs "$runs" --export-json "$json" \
    "$bin ${args[*]}" >/dev/null
  median_s=$(grep -o '"median": *[0-9.e+-]*' "$json" | head -n 1 | sed 's/.*: *//')
  median_us=$(awk -v s="$median_s" 'BEGIN { printf "%d", s * 1000000 }')
  how="hyperfine, $runs runs"
else
  times=()
  for ((i = 0; i < runs; i++)); do
    start=$EPOCHREALTIME
    "$bin" "${args[@]}" >/dev/null
    end=$EPOCHREALTIME
    times+=("$((${end//[.,]/} - ${start//[.,]/}))")
  done
  median_us=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  how="shell loop, $runs runs, fork/exec from bash included"
fi

if [ ! -x /usr/bin/time ]; then
  echo "bench-blueprint: /usr/bin/time (GNU time) is missing: apt-get install -y time" >&2
  exit 2
fi
peak_kb=0
for _ in 1 2 3 4 5; do
  kb=$(/usr/bin/time -v "$bin" "${args[@]}" 2>&1 >/dev/null |
    awk -F': *' '/Maximum resident set size/ { print $2 }')
  if [ "$kb" -gt "$peak_kb" ]; then peak_kb=$kb; fi
done

verdict() { if [ "$1" -lt "$2" ]; then echo ok; else echo MISSED; fi; }
time_verdict=$(verdict "$median_us" $((goal_ms * 1000)))
mem_verdict=$(verdict "$peak_kb" "$goal_kb")
printf 'machine: %s cores, %s\n' "$(nproc)" "$(uname -srm)"
printf 'command: %s %s\n' "target/release/affine-authentik" "${args[*]}"
printf 'wall time: median %d.%02d ms (%s); goal < %d ms: %s\n' \
  $((median_us / 1000)) $((median_us % 1000 / 10)) "$how" "$goal_ms" "$time_verdict"
printf 'peak memory: %d.%d MiB max RSS (GNU time, largest of 5 runs); goal < 10 MiB: %s\n' \
  $((peak_kb / 1024)) $((peak_kb % 1024 * 10 / 1024)) "$mem_verdict"
[ "$time_verdict" = ok ] && [ "$mem_verdict" = ok ]

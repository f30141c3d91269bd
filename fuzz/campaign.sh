#!/usr/bin/env bash
# A fuzz campaign: every cargo-fuzz target for SECONDS each (default 600),
# one after the other, each from its checked-in seeds plus what earlier
# campaigns found (kept in fuzz/corpus/<target>/, ignored by git), with
# JOBS parallel workers per target (default 1). Prints a markdown table of
# executions per target and in total, and the crashes (fuzz/artifacts/).
#
#   fuzz/campaign.sh 600            # ~10 min per target
#   JOBS=2 fuzz/campaign.sh 3600    # an hour per target on two cores
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-600}
JOBS=${JOBS:-1}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build >&2
LOGS=$(mktemp -d)
total=0
crashes=0
rows=""
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    echo "--- $t: ${SECONDS_PER_TARGET}s x $JOBS" >&2
    parallel=()
    [ "$JOBS" = 1 ] || parallel=(-jobs="$JOBS" -workers="$JOBS")
    set +e
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" \
        -print_final_stats=1 "${parallel[@]}" >"$LOGS/$t.log" 2>&1
    rc=$?
    set -e
    # With -jobs the stats are in fuzz-<n>.log files in this directory.
    execs=$( (cat "$LOGS/$t.log" fuzz-*.log 2>/dev/null || true) \
        | awk '/stat::number_of_executed_units:/ { n += $NF } END { print n + 0 }')
    rm -f fuzz-*.log
    found=$( (find "artifacts/$t" -type f -newer "$LOGS" 2>/dev/null || true) | wc -l)
    total=$((total + execs))
    crashes=$((crashes + found))
    rows+="| \`$t\` | $SECONDS_PER_TARGET x $JOBS | $execs | $found | $rc |"$'\n'
done
echo "| target | seconds x jobs | executions | crashes | exit |"
echo "|---|---:|---:|---:|---:|"
printf '%s' "$rows"
echo "| **total** | | **$total** | **$crashes** | |"
rm -rf "$LOGS"

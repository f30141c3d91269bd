#!/usr/bin/env bash
# Idle cost of one agent with N configured static peers (none reachable, no
# traffic): the CPU seconds (user + system) it uses over SECS seconds after
# WARM seconds of settling, and its resident memory. Issue 14's bar: with
# 1,000 peers the CPU time over 60 s is near zero (no per-peer timer fires
# while nothing flows).
# Usage (as root): benches/idle.sh [BINARY] [N] [SECS]
#   BINARY defaults to target/release/vxsec; N to 1000; SECS to 60.
set -euo pipefail
BIN=${1:-target/release/vxsec}; N=${2:-1000}; SECS=${3:-60}; WARM=${WARM:-5}
NS=vxidle$$; DIR=$(mktemp -d)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; sleep 1; "$BIN" down -c "$DIR/c.toml" >/dev/null 2>&1 || true; ip netns del $NS 2>/dev/null || true; ip link del vxi$$a 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
ip netns add $NS
ip link add vxi$$a type veth peer name vxi$$b
ip link set vxi$$b netns $NS
ip -n $NS addr add 192.0.2.1/24 dev vxi$$b; ip -n $NS link set vxi$$b up; ip -n $NS link set lo up
ip -n $NS route add default via 192.0.2.254
"$BIN" keygen -o "$DIR/k" >/dev/null
python3 - "$DIR" "$N" <<'PY'
import sys, os, base64
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/c.toml", "w") as f:
    f.write(f'[interface]\naddress = "10.200.0.1/16"\nprivate_key_file = "{d}/k"\ncontrol_socket = "{d}/s"\n\n')
    for i in range(n):
        k = base64.b64encode(os.urandom(32)).decode()
        a = i + 2
        f.write(f'[[peer]]\npublic_key = "{k}"\nendpoint = "198.51.{a//250}.{a%250+1}:51830"\ntunnel_address = "10.200.{a//250}.{a%250+2}"\n\n')
PY
ip netns exec $NS "$BIN" up -c "$DIR/c.toml" >"$DIR/log" 2>&1 &
PID=$!
sleep "$WARM"
kill -0 $PID || { cat "$DIR/log"; exit 1; }
t() { awk '{print $14+$15}' /proc/$PID/stat; }
rss() { awk '/VmRSS/{print $2}' /proc/$PID/status; }
a=$(t); sleep "$SECS"; b=$(t)
hz=$(getconf CLK_TCK)
thr=$(ls /proc/$PID/task | wc -l)
echo "peers=$N secs=$SECS cpu_s=$(echo "scale=3; ($b-$a)/$hz" | bc) rss_kib=$(rss) threads=$thr bin=$BIN"

#!/usr/bin/env bash
# End-to-end overhead benchmark of vxsec (on demand, not in CI; needs root).
#
#   sudo -E env "PATH=$PATH" benches/e2e/run.sh   # builds release binaries, ~3 minutes
#   DURATION=10 VXSEC_BIN=target/release/vxsec SKIP_BUILD=1 sudo -E benches/e2e/run.sh
#   SCENARIOS="vxlan aes" PROFILE=/tmp/prof sudo -E benches/e2e/run.sh
#       (PROFILE: a system-wide `perf record -g` of each TCP run, one file per
#       scenario; the recording itself costs some throughput)
#   VXSEC_INTERFACE_EXTRA=$'workers = 1\nbusy_poll_us = 0' sudo -E benches/e2e/run.sh
#       (extra lines for the agents' [interface] section)
#   SCENARIOS=flood FLOOD_RATE=63000 SKIP_BUILD=1 sudo -E benches/e2e/run.sh
#       (only the handshake floods; FLOOD_KINDS="garbage mac1 spoofed replay")
#
# On ONE set of network namespaces (two nodes on an underlay bridge, a
# container namespace behind each), it measures in turn:
#   1. plain veth (node to node over the underlay)
#   2. kernel VXLAN VNI 42 without encryption (container to container)
#   3. kernel VXLAN over vxsec, AES-256-GCM
#   4. kernel VXLAN over vxsec, ChaCha20-Poly1305
#   5. kernel VXLAN over boringtun-cli (userspace WireGuard), when installed
#   6. kernel VXLAN over vxsec AES-256-GCM under handshake floods from a third
#      host on the underlay (vxsec-lab-helper hs-flood, FLOOD_RATE type-1
#      datagrams/s to node 2 for each kind: garbage, valid mac1 from its own
#      address, valid mac1 from spoofed unowned addresses, a replayed real
#      initiation): TCP throughput vs the garbage flood, a timed `vxsec
#      rekey` mid-flood, node 2's UDP RcvbufErrors and handshake counters,
#      the generator's CPU seconds.
# For each: iperf3 TCP throughput (reno pinned in every namespace), iperf3
# UDP packets/s delivered (64-byte datagrams, unthrottled), ping RTT p50/p99
# every 5 ms (at that interval iputils ping spins on its CPU between
# probes), ping RTT p50 every 50 ms (ping sleeps between probes, as most
# request/response applications do), and CPU seconds per GB moved (user+system time of every process in the
# namespaces, iperf3 client and server, agents, over the TCP run).
# Writes benches/e2e/results/latest.md, latest.csv and latest.png, and for
# the floods latest-flood.md and latest-flood.csv.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RESULTS=$HERE/results
DURATION=${DURATION:-10}
UDP_DURATION=${UDP_DURATION:-5}
PINGS=${PINGS:-400}
IDLE_PINGS=${IDLE_PINGS:-60}
SCENARIOS=${SCENARIOS:-veth vxlan aes chacha boringtun flood}
FLOOD_RATE=${FLOOD_RATE:-50000}
FLOOD_KINDS=${FLOOD_KINDS:-garbage mac1 spoofed replay}
want() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
ID=vxb$(printf '%05x' $(( (RANDOM << 5 ^ RANDOM) & 0xFFFFF )))
WORK=$(mktemp -d "/tmp/vxsec-e2e.XXXXXX")
chmod 700 "$WORK"
CSV=$WORK/results.csv
U=$ID-u N1=$ID-n1 N2=$ID-n2 C1=$ID-c1 C2=$ID-c2 H=$ID-h
WG1=wb${ID:3}1 WG2=wb${ID:3}2
PIDS=()

log() { printf '[e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for ns in $U $N1 $N2 $C1 $C2 $H; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    done
    sleep 0.2
    for ns in $U $N1 $N2 $C1 $C2 $H; do ip netns del "$ns" 2>/dev/null; done
    rm -f "/var/run/wireguard/$WG1.sock" "/var/run/wireguard/$WG2.sock"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "needs root (network namespaces): sudo -E env \"PATH=\$PATH\" $0"

need_pkgs=()
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
BORINGTUN=${BORINGTUN:-$(command -v boringtun-cli || true)}
if [ -n "$BORINGTUN" ] && ! command -v wg >/dev/null; then need_pkgs+=(wireguard-tools); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq && apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if want aes || want chacha || want flood; then
if [ -z "${SKIP_BUILD:-}" ]; then
    command -v cargo >/dev/null || die "no cargo on PATH (sudo resets it): run as sudo -E env \"PATH=\$PATH\" $0, or build first and set SKIP_BUILD=1"
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --bins --quiet -p vxsec -p vxsec-lab)
fi
VXSEC=${VXSEC_BIN:-$ROOT/target/release/vxsec}
[ -x "$VXSEC" ] || die "no vxsec binary at $VXSEC"
HELPER=${VXSEC_HELPER:-$(dirname "$VXSEC")/vxsec-lab-helper}
if want flood; then
    [ -x "$HELPER" ] || die "no vxsec-lab-helper at $HELPER (cargo build --release --bins -p vxsec -p vxsec-lab)"
    command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
    command -v nstat >/dev/null || need_pkgs+=(iproute2)
    if [ ${#need_pkgs[@]} -gt 0 ]; then
        apt-get update -qq && apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null
    fi
fi
fi

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# A namespace as the lab makes one (lab/src/topology.rs): IPv6 on,
# addresses usable at once (no duplicate address detection), reno pinned.
mkns() {
    ip netns add "$1"
    nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
        net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv4.tcp_congestion_control=reno
    ip -n "$1" link set lo up
}

# The underlay is dual-stack and its bridge is every node's default router
# (IPv4 and IPv6), as in the lab: real nodes have a default route, which is
# where VXLAN would leak if vxsec's guards were missing.

setup_topology() {
    mkns $U
    ip -n $U link add ubr type bridge
    ip -n $U link set ubr up
    ip -n $U addr add 192.168.77.254/24 dev ubr
    ip -n $U addr add fd00:77::fe/64 dev ubr nodad
    local i
    for i in 1 2; do
        local n=$ID-n$i c=$ID-c$i
        mkns "$n"; mkns "$c"
        ip -n $U link add u$i type veth peer name eth0 netns "$n"
        ip -n $U link set u$i master ubr up
        ip -n "$n" addr add 192.168.77.$i/24 dev eth0
        ip -n "$n" addr add fd00:77::$i/64 dev eth0 nodad
        ip -n "$n" link set eth0 up
        ip -n "$n" route add default via 192.168.77.254
        ip -n "$n" -6 route add default via fd00:77::fe
        ip -n "$n" link add br0 type bridge
        ip -n "$n" link add c0 type veth peer name eth0 netns "$c"
        ip -n "$n" link set c0 master br0 up
        ip -n "$n" link set br0 up
        ip -n "$c" addr add 10.42.0.$i/24 dev eth0
        ip -n "$c" addr add fd00:42::$i/64 dev eth0 nodad
        ip -n "$c" link set eth0 up
    done
}

# vxlan_up LOCAL1 LOCAL2 MTU [DEV]: kernel VXLAN VNI 42 between the nodes.
vxlan_up() {
    local l1=$1 l2=$2 mtu=$3 dev=${4:-}
    local i local remote
    for i in 1 2; do
        if [ $i = 1 ]; then local=$l1 remote=$l2; else local=$l2 remote=$l1; fi
        ip -n $ID-n$i link add vxlan42 mtu "$mtu" type vxlan id 42 local "$local" dstport 4789 ${dev:+dev $dev}
        ip -n $ID-n$i link set vxlan42 master br0 up
        nsx $ID-n$i bridge fdb append 00:00:00:00:00:00 dev vxlan42 dst "$remote"
        ip -n $ID-n$i link set c0 mtu "$mtu"
        ip -n $ID-c$i link set eth0 mtu "$mtu"
    done
}

vxlan_down() {
    ip -n $N1 link del vxlan42 2>/dev/null || true
    ip -n $N2 link del vxlan42 2>/dev/null || true
}

# CPU seconds (user+system) of every process now running in our namespaces
# (iperf3 server, agents, boringtun); other engineers' load is not counted.
ns_cpu_seconds() {
    local tck ns p total=0
    tck=$(getconf CLK_TCK)
    for ns in $U $N1 $N2 $C1 $C2; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            total=$((total + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
        done
    done
    awk -v j="$total" -v t="$tck" 'BEGIN { printf "%.3f", j / t }'
}

# Seconds from bash's `times` "XmY.Zs" notation.
secs() { awk -v v="$1" 'BEGIN { split(v, a, "m"); sub("s", "", a[2]); printf "%.3f", a[1] * 60 + a[2] }'; }

# measure NAME SRC_NS DST_NS DST_IP MTU
measure() {
    local name=$1 src=$2 dst=$3 ip=$4 mtu=$5
    log "$name: waiting for $ip"
    nsx "$src" ping -n -q -c 1 -w 10 "$ip" >/dev/null || die "$name: $ip unreachable"
    ip netns exec "$dst" iperf3 -s -p 5201 >/dev/null 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    sleep 0.5
    log "$name: TCP ${DURATION}s"
    local c0 c1 client
    c0=$(ns_cpu_seconds)
    # The client's own CPU time comes from `times` in its subshell (user and
    # system of waited-for children, second line).
    local perf_pid=
    if [ -n "${PROFILE:-}" ]; then
        mkdir -p "$PROFILE"
        perf record -q -a -g -o "$PROFILE/${name//[^A-Za-z0-9-]/_}.perf" -- sleep "$DURATION" 2>/dev/null &
        perf_pid=$!
    fi
    client=$(
        nsx "$src" iperf3 -c "$ip" -p 5201 -t "$DURATION" -C reno -J >"$WORK/$name.tcp.json"
        times
    )
    client=${client##*$'\n'}
    [ -z "$perf_pid" ] || wait "$perf_pid" || true
    c1=$(ns_cpu_seconds)
    local cpu
    cpu=$(awk -v a="$c0" -v b="$c1" -v u="$(secs "${client% *}")" -v s="$(secs "${client#* }")" \
        'BEGIN { printf "%.3f", b - a + u + s }')
    log "$name: UDP ${UDP_DURATION}s"
    nsx "$src" iperf3 -c "$ip" -p 5201 -u -b 0 -l 64 -t "$UDP_DURATION" -J >"$WORK/$name.udp.json"
    log "$name: ping x$PINGS"
    nsx "$src" ping -n -c "$PINGS" -i 0.005 "$ip" >"$WORK/$name.ping.txt" || true
    log "$name: ping x$IDLE_PINGS, idle sender"
    nsx "$src" ping -n -c "$IDLE_PINGS" -i 0.05 "$ip" >"$WORK/$name.ping-idle.txt" || true
    kill "$srv" 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
    python3 "$HERE/parse.py" row "$name" "$mtu" "$WORK/$name.tcp.json" "$WORK/$name.udp.json" \
        "$WORK/$name.ping.txt" "$cpu" "$WORK/$name.ping-idle.txt" >>"$CSV"
    tail -n 1 "$CSV" >&2
}

# vxsec_up SUITE: agents in both nodes; writes the VXLAN MTU they document
# to $WORK/vxlan_mtu.
vxsec_up() {
    local suite=$1 i j
    for i in 1 2; do
        [ -f "$WORK/n$i.key" ] || "$VXSEC" keygen --out "$WORK/n$i.key" >/dev/null
    done
    for i in 1 2; do
        j=$((3 - i))
        cat >"$WORK/n$i.toml" <<TOML
[interface]
name = "vxsec0"
address = "10.200.0.$i/16"
listen_port = 51830
private_key_file = "$WORK/n$i.key"
suite = "$suite"
network_id = "e2e-$ID"
underlay_mtu = 1500
control_socket = "$WORK/n$i.sock"
${VXSEC_INTERFACE_EXTRA:-}

[[peer]]
name = "node$j"
public_key = "$("$VXSEC" pubkey --key "$WORK/n$j.key" | awk '{print $NF}')"
endpoint = "192.168.77.$j:51830"
tunnel_address = "10.200.0.$j"
TOML
        chmod 600 "$WORK/n$i.toml"
        rm -f "$WORK/n$i.sock"
        NO_COLOR=1 ip netns exec $ID-n$i "$VXSEC" up -c "$WORK/n$i.toml" >"$WORK/n$i-$suite.log" 2>&1 &
        PIDS+=("$!")
        eval "AGENT$i=$!"
    done
    for i in 1 2; do
        local k
        for k in $(seq 100); do
            "$VXSEC" status --json --socket "$WORK/n$i.sock" >"$WORK/st$i.json" 2>/dev/null && break
            sleep 0.1
        done
    done
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vxlan_mtu"])' "$WORK/st1.json" \
        >"$WORK/vxlan_mtu" || die "agents did not come up: $(tail -5 "$WORK/n1-$suite.log")"
}

vxsec_down() {
    kill -TERM "$AGENT1" "$AGENT2" 2>/dev/null || true
    wait "$AGENT1" "$AGENT2" 2>/dev/null || true
    local k i
    for k in $(seq 50); do
        if ! ip -n $N1 link show vxsec0 >/dev/null 2>&1 && ! ip -n $N2 link show vxsec0 >/dev/null 2>&1; then
            # The agents' fail-closed guards outlive them (README, "Fail
            # closed"); remove them, or the next scenario's VXLAN is dropped.
            for i in 1 2; do
                nsx $ID-n$i "$VXSEC" down -c "$WORK/n$i.toml" >/dev/null || die "vxsec down failed on n$i"
            done
            return 0
        fi
        sleep 0.1
    done
    die "vxsec0 still present after SIGTERM"
}

boringtun_up() {
    local i j
    mkdir -p /var/run/wireguard
    for i in 1 2; do (umask 077; wg genkey >"$WORK/wg$i.key"); done
    for i in 1 2; do
        local dev=wb${ID:3}$i
        WG_SUDO=1 ip netns exec $ID-n$i "$BORINGTUN" -f --disable-drop-privileges "$dev" >"$WORK/bt$i.log" 2>&1 &
        PIDS+=("$!")
    done
    sleep 1
    for i in 1 2; do
        j=$((3 - i))
        local dev=wb${ID:3}$i
        nsx $ID-n$i wg set "$dev" private-key "$WORK/wg$i.key" listen-port 51820 \
            peer "$(wg pubkey <"$WORK/wg$j.key")" endpoint 192.168.77.$j:51820 allowed-ips 10.201.0.$j/32
        ip -n $ID-n$i addr add 10.201.0.$i/24 dev "$dev"
        ip -n $ID-n$i link set "$dev" mtu 1420 up
    done
}

# --- handshake floods (scenario 6) ---

# UDP receive-buffer drops in node 2 (IPv4 and IPv6 MIBs).
rcvbuf_errors() {
    nsx $N2 nstat -asz UdpRcvbufErrors Udp6RcvbufErrors 2>/dev/null | awk '/RcvbufErrors/ { n += $2 } END { print n + 0 }'
}

node_status() { "$VXSEC" status --json --socket "$WORK/n$1.sock"; }

peer_rekeys() {
    node_status 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["peers"][0]["rekeys"])'
}

# Seconds until a `vxsec rekey` from node 1 shows in its status ("-" after 5 s).
timed_rekey() {
    local before t0 k
    before=$(peer_rekeys)
    t0=$(date +%s.%N)
    "$VXSEC" rekey --socket "$WORK/n1.sock" >/dev/null
    for k in $(seq 250); do
        if [ "$(peer_rekeys)" -gt "$before" ]; then
            awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'
            return
        fi
        sleep 0.02
    done
    echo "-"
}

# A real initiation node 1 sends to node 2 (UDP payload), for the replay flood.
capture_initiation() {
    nsx $N2 timeout 10 tcpdump -i eth0 -c 1 -w "$WORK/init.pcap" 'udp dst port 51830 and udp[8] = 1' 2>/dev/null &
    local cap=$!
    sleep 1
    "$VXSEC" rekey --socket "$WORK/n1.sock" >/dev/null
    wait "$cap" || die "no initiation captured"
    python3 "$HERE/parse.py" pcap-payload "$WORK/init.pcap" "$WORK/init.bin"
}

flood_scenario() {
    mkns $H
    ip -n $U link add u9 type veth peer name eth0 netns $H
    ip -n $U link set u9 master ubr up
    ip -n $H addr add 192.168.77.66/24 dev eth0
    ip -n $H link set eth0 up
    vxsec_up aes-256-gcm
    local mtu key2 kind arg
    mtu=$(cat "$WORK/vxlan_mtu")
    vxlan_up 10.200.0.1 10.200.0.2 "$mtu"
    nsx $C1 ping -n -q -c 1 -w 10 10.42.0.2 >/dev/null || die "flood: overlay down"
    key2=$(node_status 2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
    capture_initiation
    echo "kind,sent_per_s,sent,gen_cpu_s,gen_secs,tcp_gbps,rekey_s,rcvbuf_errors,cookie_replies_sent,cookie_replies_dropped,queue_drops,initiations_processed,replies_dropped_sndbuf,data_dropped_after_wait,load_engaged" >"$FLOOD_CSV"
    for kind in $FLOOD_KINDS; do
        case $kind in
            mac1|spoofed) arg=$key2 ;;
            replay) arg=$WORK/init.bin ;;
            *) arg=- ;;
        esac
        sleep 2 # let load protection from the previous flood end
        node_status 2 >"$WORK/fl-$kind-before.json"
        local r0 srv fl cl rk r1
        r0=$(rcvbuf_errors)
        ip netns exec $C2 iperf3 -s -p 5202 -1 >/dev/null 2>&1 &
        srv=$!
        PIDS+=("$srv")
        log "flood $kind: $FLOOD_RATE/s for $((DURATION + 2))s, TCP ${DURATION}s"
        ip netns exec $H "$HELPER" hs-flood 192.168.77.2:51830 "$kind" "$FLOOD_RATE" $((DURATION + 2)) "$arg" \
            >"$WORK/flood-$kind.txt" 2>&1 &
        fl=$!
        PIDS+=("$fl")
        sleep 1
        nsx $C1 iperf3 -c 10.42.0.2 -p 5202 -t "$DURATION" -C reno -J >"$WORK/flood-$kind.tcp.json" &
        cl=$!
        sleep $((DURATION / 2))
        rk=$(timed_rekey)
        wait "$cl" || log "flood $kind: iperf3 failed"
        wait "$fl" || true
        wait "$srv" 2>/dev/null || true
        r1=$(rcvbuf_errors)
        node_status 2 >"$WORK/fl-$kind-after.json"
        python3 "$HERE/parse.py" flood-row "$kind" "$WORK/flood-$kind.tcp.json" "$WORK/flood-$kind.txt" \
            "$rk" $((r1 - r0)) "$WORK/fl-$kind-before.json" "$WORK/fl-$kind-after.json" >>"$FLOOD_CSV" \
            || log "flood $kind: no result ($(tail -2 "$WORK/flood-$kind.txt"))"
        tail -n 1 "$FLOOD_CSV" >&2
    done
    vxlan_down
    vxsec_down
}

FLOOD_CSV=$WORK/flood.csv
MACHINE="$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) CPUs, Linux $(uname -r), load average at start $(cut -d" " -f1-3 /proc/loadavg)"
echo "scenario,mtu,tcp_gbps,tcp_bytes,udp_pps,rtt_p50_ms,rtt_p99_ms,cpu_s_per_gb,rtt_idle_p50_ms" >"$CSV"
setup_topology

want veth && measure "plain veth" $N1 $N2 192.168.77.2 1500

if want vxlan; then
    vxlan_up 192.168.77.1 192.168.77.2 1450 eth0
    measure "kernel VXLAN, no encryption" $C1 $C2 10.42.0.2 1450
    vxlan_down
fi

for suite in aes-256-gcm chacha20-poly1305; do
    want "${suite%%[0-9-]*}" || continue
    vxsec_up $suite
    mtu=$(cat "$WORK/vxlan_mtu")
    vxlan_up 10.200.0.1 10.200.0.2 "$mtu"
    measure "VXLAN over vxsec $suite" $C1 $C2 10.42.0.2 "$mtu"
    vxlan_down
    vxsec_down
done

want flood && flood_scenario

BT_NOTE="boringtun-cli not installed (cargo install boringtun-cli): skipped"
if [ -n "$BORINGTUN" ] && want boringtun; then
    boringtun_up
    vxlan_up 10.201.0.1 10.201.0.2 1370
    measure "VXLAN over boringtun-cli" $C1 $C2 10.42.0.2 1370
    vxlan_down
    BT_NOTE="boringtun-cli: $("$BORINGTUN" --version 2>&1 | head -1)"
fi

mkdir -p "$RESULTS"
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The main table only when its scenarios ran (a flood-only run keeps it).
if [ "$(wc -l <"$CSV")" -gt 1 ]; then
    cp "$CSV" "$RESULTS/latest.csv"
    python3 "$HERE/parse.py" markdown "$RESULTS/latest.csv" "$MACHINE" "$DURATION" "$BT_NOTE" \
        "$COMMIT" >"$RESULTS/latest.md"
    gnuplot -e "csv='$RESULTS/latest.csv'; out='$RESULTS/latest.png'; machine='$MACHINE'" "$HERE/plot.gp" \
        || log "gnuplot failed: no plot"
    cat "$RESULTS/latest.md"
    log "wrote $RESULTS/latest.md, latest.csv, latest.png"
fi
if [ -f "$FLOOD_CSV" ]; then
    cp "$FLOOD_CSV" "$RESULTS/latest-flood.csv"
    {
        echo "Machine: $MACHINE. Commit $COMMIT."
        python3 "$HERE/parse.py" flood-markdown "$FLOOD_CSV" "$FLOOD_RATE" "$DURATION"
    } >"$RESULTS/latest-flood.md"
    cat "$RESULTS/latest-flood.md"
    log "wrote $RESULTS/latest-flood.md, latest-flood.csv"
fi

#!/usr/bin/env python3
"""Helpers of benches/e2e/run.sh: turn iperf3/ping output into one CSV row
(`row`), and the CSV into the markdown report (`markdown`). Only measured
values are printed; a value that could not be measured is '-'."""
import csv
import json
import re
import sys


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    i = min(len(v) - 1, max(0, int(round(q / 100.0 * (len(v) - 1)))))
    return v[i]


def rtts_ms(path):
    return [float(m) for m in re.findall(r"time=([0-9.]+) ms", open(path).read())]


def row(name, mtu, tcp_json, udp_json, ping_txt, cpu_seconds, idle_ping_txt):
    tcp = json.load(open(tcp_json))
    udp = json.load(open(udp_json))
    recv = tcp["end"]["sum_received"]
    gbps = recv["bits_per_second"] / 1e9
    nbytes = recv["bytes"]
    s = udp["end"]["sum"]
    pps = (s["packets"] - s["lost_packets"]) / s["seconds"] if s.get("seconds") else 0
    rtts = rtts_ms(ping_txt)
    p50, p99 = pct(rtts, 50), pct(rtts, 99)
    idle50 = pct(rtts_ms(idle_ping_txt), 50)
    cpu_s = float(cpu_seconds)
    cpu_per_gb = cpu_s / (nbytes / 1e9) if nbytes else None
    f = lambda x, fmt: "-" if x is None else fmt % x
    w = csv.writer(sys.stdout)
    w.writerow([name, mtu, "%.3f" % gbps, nbytes, "%.0f" % pps, f(p50, "%.3f"), f(p99, "%.3f"),
                f(cpu_per_gb, "%.2f"), f(idle50, "%.3f")])


def markdown(csv_path, machine, duration, bt_note, commit):
    rows = list(csv.DictReader(open(csv_path)))
    base = next((r for r in rows if r["scenario"].startswith("kernel VXLAN")), None)
    print("# vxsec end-to-end benchmark\n")
    print("Machine: %s. Commit %s. One run of `benches/e2e/run.sh`, all scenarios on the same"
          " network namespaces, TCP %ss (iperf3, reno), UDP 64-byte datagrams unthrottled"
          " (delivered packets/s), RTT from ping every 5 ms (iputils ping spins on its CPU"
          " between probes at that rate) and every 50 ms (ping sleeps: the idle-sender"
          " column). CPU s/GB = user+system CPU time of"
          " every process in the benchmark's namespaces (iperf3 client and server, agents)"
          " during the TCP run, divided by GB received; softirq work done outside those"
          " processes is not counted. Both ends run on this machine.\n" % (machine, commit, duration))
    print("| scenario | MTU | TCP Gbit/s | vs kernel VXLAN | UDP pkt/s | RTT p50 ms | RTT p99 ms | RTT p50 ms, idle sender | CPU s/GB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rel = "-"
        if base and float(base["tcp_gbps"]) > 0:
            rel = "%.0f %%" % (100.0 * float(r["tcp_gbps"]) / float(base["tcp_gbps"]))
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["scenario"], r["mtu"], r["tcp_gbps"], rel, r["udp_pps"], r["rtt_p50_ms"],
            r["rtt_p99_ms"], r.get("rtt_idle_p50_ms", "-"), r["cpu_s_per_gb"]))
    print("\n%s\n\n![throughput and CPU per GB](latest.png)" % bt_note)


if __name__ == "__main__":
    if sys.argv[1] == "row":
        row(*sys.argv[2:9])
    elif sys.argv[1] == "markdown":
        markdown(*sys.argv[2:7])
    else:
        sys.exit("usage: parse.py row|markdown ...")

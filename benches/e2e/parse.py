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


def pcap_payload(pcap, out):
    """The UDP payload of the first IPv4/UDP frame of an Ethernet pcap."""
    data = open(pcap, "rb").read()
    frame = data[24 + 16:]
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    udp = ip[ihl:]
    length = int.from_bytes(udp[4:6], "big")
    open(out, "wb").write(udp[8:length])


def _delta(before, after, path):
    def get(doc):
        for k in path:
            doc = doc.get(k, {}) if isinstance(doc, dict) else {}
        return doc if isinstance(doc, (int, float)) else 0
    return get(after) - get(before)


def flood_row(kind, tcp_json, flood_txt, rekey_s, rcvbuf_delta, st_before, st_after):
    """One CSV row of the flood scenario (counters of the flooded node)."""
    tcp = json.load(open(tcp_json))
    gbps = tcp["end"]["sum_received"]["bits_per_second"] / 1e9
    res = {}
    for line in open(flood_txt):
        if line.startswith("RESULT"):
            res = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    b, a = json.load(open(st_before)), json.load(open(st_after))
    d = lambda *p: "%d" % _delta(b, a, p)
    w = csv.writer(sys.stdout)
    w.writerow([kind, res.get("rate", "-"), res.get("sent", "-"), res.get("cpu_s", "-"),
                res.get("secs", "-"), "%.3f" % gbps, rekey_s, rcvbuf_delta,
                d("handshake", "cookie_replies_sent"), d("handshake", "cookie_replies_dropped"),
                d("handshake", "queue_drops"), d("handshake", "initiations_processed"),
                d("handshake", "replies_dropped_send_buffer_full"),
                d("io", "udp_tx_dropped_full"), d("handshake", "load_engaged")])


def flood_markdown(csv_path, rate, duration):
    rows = list(csv.DictReader(open(csv_path)))
    base = next((r for r in rows if r["kind"] == "garbage"), None)
    print("\n## Handshake floods\n")
    print("VXLAN over vxsec (AES-256-GCM), iperf3 TCP %ss container to container while a"
          " host on the underlay floods node 2 with type-1 datagrams at %s/s (same target"
          " rate for every kind; the generator shares this machine's CPUs: its CPU seconds"
          " are shown). A `vxsec rekey` from node 1 is timed mid-flood. Counters are node"
          " 2's deltas over the run. Kinds: garbage = bad mac1; mac1 = valid mac1, random"
          " bodies, the attacker's own address; spoofed = valid mac1 from 150 source"
          " addresses nobody owns (replies wait on ARP); replay = a captured real"
          " initiation replayed from the attacker's address.\n" % (duration, rate))
    print("| flood | sent/s | generator CPU s | TCP Gbit/s | vs garbage | rekey s |"
          " RcvbufErrors | cookie replies sent | capped | queue drops | DH | replies dropped (sndbuf full) | data sends dropped after waiting |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rel = "-"
        if base and float(base["tcp_gbps"]) > 0:
            rel = "%.0f %%" % (100.0 * float(r["tcp_gbps"]) / float(base["tcp_gbps"]))
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["kind"], r["sent_per_s"], r["gen_cpu_s"], r["tcp_gbps"], rel, r["rekey_s"],
            r["rcvbuf_errors"], r["cookie_replies_sent"], r["cookie_replies_dropped"],
            r["queue_drops"], r["initiations_processed"], r["replies_dropped_sndbuf"],
            r["data_dropped_after_wait"]))


if __name__ == "__main__":
    if sys.argv[1] == "row":
        row(*sys.argv[2:9])
    elif sys.argv[1] == "markdown":
        markdown(*sys.argv[2:7])
    elif sys.argv[1] == "pcap-payload":
        pcap_payload(*sys.argv[2:4])
    elif sys.argv[1] == "flood-row":
        flood_row(*sys.argv[2:9])
    elif sys.argv[1] == "flood-markdown":
        flood_markdown(*sys.argv[2:5])
    else:
        sys.exit("usage: parse.py row|markdown|pcap-payload|flood-row|flood-markdown ...")

#!/usr/bin/env python3
"""Benchmark 7: admission of known keys during a flood of unknown ones.

One nginx worker with our module, standalone, under the fake master (t/lib/fake_master.py),
which answers unknown keys after 2 s and the known master key after 50 ms. Known keys are
tried one after another from addresses of their own: `tk` (its key in the node's table,
decided in-process) and `mk` (a key the master allows, asked every time: ttl 0). First with
nothing else going on, then while client processes flood the node with unknown-key publishes
from 16 loopback addresses (half close right after `publish`, half wait 0.5 s for an answer),
spread over about 12 s. Latency is per session, from TCP connect to the server's answer to
`publish`. Prints a markdown table: p50/p99 quiet and during the flood, and their ratios.

    python3 bench/flood_admission.py [--flood 10000] [--procs 4] [--spread 12]

BENCH_MODULES=<dir> loads the modules from another directory than dist/modules.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.dont_write_bytecode = True
from benchlib import MODS, TOP, nginx, port, stop_nginx, wait_port, write_conf  # noqa: E402

sys.path.insert(0, os.path.join(TOP, "t/lib"))
import rtmp_raw  # noqa: E402

MODS = os.environ.get("BENCH_MODULES", MODS)  # another build's modules, to compare
FAKE_MASTER = os.path.join(TOP, "t/lib/fake_master.py")
CLIENT = os.path.join(TOP, "t/lib/rtmp_fuzz.py")
MASTER_KEY = "bench-master-key"


def control(mport, what, data):
    req = urllib.request.Request("http://127.0.0.1:%d/_control/%s" % (mport, what), json.dumps(data).encode(),
                                 {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def caps_supported(work):
    d = os.path.join(work, "probe")
    os.makedirs(os.path.join(d, "logs"))
    write_conf(d, "rtmp { mesh_auth_pending_max 16; mesh_auth_pending_per_addr 4; }\n", mods=MODS)
    return nginx(d, "-t", check=False).returncode == 0


def start(work, mport, caps):
    d = os.path.join(work, "node")
    os.makedirs(os.path.join(d, "logs"))
    rport = port()
    with open(os.path.join(d, "master.key"), "w") as f:
        f.write(MASTER_KEY + "\n")
    with open(os.path.join(d, "table.json"), "w") as f:
        f.write('{"version": 0}')
    os.chmod(d, 0o777)
    limits = "    mesh_auth_pending_max 128;\n    mesh_auth_pending_per_addr 4;\n" if caps else ""
    write_conf(d, """rtmp {{
    access_log off;
    mesh_node_id bench-flood;
    mesh_table_file {d}/table.json;
    mesh_master http://127.0.0.1:{mport};
    mesh_master_key_file {d}/master.key;
    mesh_heartbeat_interval 1s;
    mesh_poll_wait 3s;
    mesh_master_timeout 10s;
{limits}    server {{ listen 127.0.0.1:{rport}; application live {{ mesh on; live on; }} }}
}}
""".format(d=d, mport=mport, limits=limits, rport=rport), error_log="crit", worker_connections=4096,
               main="worker_rlimit_nofile 20000;\n", mods=MODS)
    nginx(d)
    wait_port(rport)
    return d, rport


def probe(url, name, args, src, stop, out, timeout):
    """Known-key publishes one after another until `stop` is set."""
    while not stop.is_set():
        r = rtmp_raw.check_once(url, rtmp_raw.full_name(name, args), src=src, timeout=timeout)
        out.append(r)
        time.sleep(0.1)


def probes(url, seconds, timeout, flood=None):
    """Run the known-key probes for `seconds` (or while `flood` processes run)."""
    stop = threading.Event()
    res = {"tk": [], "mk": []}
    ths = [threading.Thread(target=probe, args=(url, "tk", "key=table-key", "127.0.0.2", stop, res["tk"], timeout))]
    # one stream each: two publishers of one stream would be "already publishing"
    ths += [threading.Thread(target=probe, args=(url, "mk%d" % a, "key=master-key", "127.0.0.%d" % a, stop, res["mk"],
                                                 timeout)) for a in (3, 4, 5)]
    for t in ths:
        t.start()
    if flood:
        time.sleep(1)
        for p in flood:
            p.wait()
    else:
        time.sleep(seconds)
    stop.set()
    for t in ths:
        t.join()
    return res


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=10000, help="unknown-key publishes")
    ap.add_argument("--procs", type=int, default=4, help="flood client processes")
    ap.add_argument("--spread", type=float, default=12, help="seconds the flood lasts at least")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-flood-")
    mport = port()
    master = subprocess.Popen([sys.executable, "-B", FAKE_MASTER, "--port", str(mport), "--key", MASTER_KEY],
                              stdout=subprocess.DEVNULL)
    node = None
    try:
        wait_port(mport)
        control(mport, "table", {"node_id": "bench-flood", "table": {
            "version": 1, "role": "standalone",
            "publish": {"tk": {"key_sha256": hashlib.sha256(b"table-key").hexdigest()}}}})
        control(mport, "auth_default", {"allow": False, "reason": "unknown stream", "delay": 2})
        for n in (3, 4, 5):
            control(mport, "auth", {"stream": "mk%d" % n, "allow": True, "ttl_s": 0, "credential": "master-key",
                                    "delay": 0.05})
        caps = caps_supported(work)
        node, rport = start(work, mport, caps)
        url = "rtmp://127.0.0.1:%d/live" % rport
        end = time.time() + 10
        while time.time() < end and not rtmp_raw.check_once(url, "tk?key=table-key")["accepted"]:
            time.sleep(0.2)  # the table from the master is in force
        timeout = 15
        quiet = probes(url, a.spread, timeout)
        each = a.flood // a.procs
        flood = [subprocess.Popen([sys.executable, "-B", CLIENT, "flood", "--url", url, "--count", str(each),
                                   "--concurrency", "32", "--src-net", "127.0.8%d" % k, "--src-count", "4",
                                   "--leave", "0.5", "--hold", "0.5", "--prefix", "bf%d-" % k, "--seed", str(k),
                                   "--rate", str(each / a.spread)], stdout=subprocess.PIPE, text=True)
                 for k in range(a.procs)]
        t0 = time.time()
        loud = probes(url, 0, timeout, flood)
        wall = time.time() - t0 + 1
        fl = [json.loads(p.stdout.read() or "{}") for p in flood]
        refused = sum(f.get("refused", 0) for f in fl)
        print("| known key (flood: %d unknown-key publishes over %.0f s, %d refused while waiting%s) "
              "| quiet: tried | p50 ms | p99 ms | flood: tried | admitted | p50 ms | p99 ms | p50 ratio | p99 ratio |"
              % (sum(f.get("sent", 0) for f in fl), wall, refused, "" if caps else "; no caps in this build"))
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k, label in (("tk", "in the table"), ("mk", "the master allows (50 ms answer; 2 s for unknown ones)")):
            q = [r["secs"] for r in quiet[k] if r["accepted"]]
            l_ok = [r["secs"] for r in loud[k] if r["accepted"]]
            lat = [r["secs"] for r in loud[k]]  # refused or timed out count at their time
            print("| %s | %d | %.2f | %.2f | %d | %d | %.2f | %.2f | %.2f | %.2f |" % (
                label, len(quiet[k]), pct(q, 0.5), pct(q, 0.99), len(loud[k]), len(l_ok), pct(lat, 0.5),
                pct(lat, 0.99), pct(lat, 0.5) / pct(q, 0.5), pct(lat, 0.99) / pct(q, 0.99)))
        for k in ("tk", "mk"):
            codes = {}
            for r in quiet[k] + loud[k]:
                if not r["accepted"]:
                    codes[r["code"]] = codes.get(r["code"], 0) + 1
            if codes:
                print("\n%s not admitted: %s" % (k, ", ".join("%s × %d" % kv for kv in sorted(codes.items()))))
    finally:
        if node:
            stop_nginx(node)
        master.terminate()
        master.wait()
        time.sleep(0.5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

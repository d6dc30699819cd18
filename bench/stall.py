#!/usr/bin/env python3
"""Benchmark 3b: the longest event-loop stall while tables are swapped in a running node.

One nginx worker serves RTMP with our module and a tiny HTTP location on the same event loop.
A client asks that location back to back (keep-alive) and records every answer's latency: a
stall of the loop shows as a slow answer. First quiet, then while the table file is replaced
every 2 s (1k, 10k, 100k streams × 3 targets; parsed and checked off the loop, swapped on it,
live sessions checked again and pushes reconciled; the old table freed off the loop), with two
live publishers whose pushes retry against down targets.

    python3 bench/stall.py [--seconds 20]
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

from benchlib import nginx, port, stop_nginx, write_conf


def table(n, version, down):
    key = hashlib.sha256(b"k").hexdigest()
    targets = lambda s: [{"node_id": f"r{j}", "node_url": f"rtmp://127.0.0.1:{down}/relay", "node_key": f"k{version}-{j}-{s}"}
                         for j in range(3)]
    names = [f"s{i}" for i in range(n)]
    return {"version": version, "role": "ingest", "publish": {s: {"key_sha256": key} for s in names},
            "ingest": {s: targets(s) for s in names}}


def write(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def probe(hport, seconds, stop_at=None):
    """Back-to-back GETs for `seconds`: every latency in ms."""
    c = http.client.HTTPConnection("127.0.0.1", hport)
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        c.request("GET", "/ping")
        c.getresponse().read()
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


def apply_max_us(hport):
    c = http.client.HTTPConnection("127.0.0.1", hport)
    c.request("GET", "/status")
    return json.loads(c.getresponse().read())["table"]["apply_us_max"]


def summary(lat):
    s = sorted(lat)
    return s[len(s) // 2], s[int(0.99 * (len(s) - 1))], s[int(0.9999 * (len(s) - 1))], s[-1], len(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mesh-bench-stall-")
    os.chmod(work, 0o777)
    pubs = []
    try:
        rp, hp, down = port(), port(), port()
        tf = os.path.join(work, "table.json")
        write(tf, table(1000, 1, down))
        write_conf(work, f"""rtmp {{
    access_log off;
    mesh_node_id ingest-1;
    mesh_table_file {tf};
    server {{ listen 127.0.0.1:{rp}; application live {{ mesh on; live on; }} }}
}}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{hp}; location = /ping {{ return 204; }} location = /status {{ mesh_status; }} }}
}}
""")
        nginx(work)
        time.sleep(0.5)
        for s in ("s1", "s2"):
            pubs.append(subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                                          "testsrc=size=320x240:rate=25", "-c:v", "libx264", "-preset", "ultrafast",
                                          "-g", "25", "-pix_fmt", "yuv420p", "-f", "flv",
                                          f"rtmp://127.0.0.1:{rp}/live/{s}?key=k"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(3)
        rows = [("quiet (no swap)", summary(probe(hp, a.seconds)), apply_max_us(hp))]
        version = 2
        # (n, path): the last phase writes 100k tables where the node does not look, a control for
        # the machine's own noise (the writer and the client share the node's 2 cores).
        for n, path in ((1000, tf), (10000, tf), (100000, tf), (100000, tf + ".elsewhere")):
            docs = [table(n, version + k, down) for k in range(2)]
            stop = threading.Event()
            swaps = [0]

            def swapper():
                nonlocal version
                while not stop.is_set():
                    write(path, docs[version % 2] | {"version": version})
                    version += 1
                    swaps[0] += 1
                    stop.wait(2)

            th = threading.Thread(target=swapper)
            th.start()
            time.sleep(1)
            lat = probe(hp, a.seconds)
            stop.set()
            th.join()
            time.sleep(3)
            applied = sum(1 for l in open(os.path.join(work, "error.log")) if "in force" in l)
            what = "a swap every 2 s" if path == tf else "written every 2 s where the node does not read (control)"
            rows.append((f"{n:,} streams × 3 targets, {what} ({swaps[0]} written, {applied} applied so far)",
                         summary(lat), apply_max_us(hp)))
        print(f"| event loop during table swaps ({a.seconds} s each, back-to-back HTTP on the same worker) "
              f"| requests | p50 ms | p99 ms | p99.99 ms | max ms | longest apply on the loop, µs (mesh_status) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, (p50, p99, p9999, mx, count), apply in rows:
            print(f"| {label} | {count} | {p50:.3f} | {p99:.3f} | {p9999:.3f} | {mx:.2f} | {apply} |")
    finally:
        for p in pubs:
            p.terminate()
            p.wait()
        stop_nginx(work)
        time.sleep(0.5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark 2: the CPU cost of relaying.

N streams (pre-encoded, about 1 Mbit/s, published with `-c copy`) go ingest → root_relay → relay
through three nginx processes with our module (pushes from relay tables, a key per hop, every
publish admitted by the table), and at the same time through three plain nginx-rtmp processes
with static `push` directives. Both chains run side by side so they see the same machine. Prints
each node's worker CPU seconds per stream-minute and the ratio ours / plain.

    python3 bench/relay_cost.py [--streams 20] [--seconds 60]
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import nginx, port, write_conf

TICK = os.sysconf("SC_CLK_TCK")


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


class Nginx:
    def __init__(self, work, name, rtmp, mesh):
        self.dir = os.path.join(work, name)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        os.chmod(self.dir, 0o777)
        write_conf(self.dir, f"rtmp {{\n    access_log off;\n{rtmp}\n}}\n", mesh=mesh, worker_connections=4096)
        nginx(self.dir)
        time.sleep(0.3)
        master = int(open(os.path.join(self.dir, "nginx.pid")).read())
        self.master = master
        kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        self.worker = int(kids[0])

    def cpu(self):
        """Worker user + system CPU seconds so far."""
        fields = open(f"/proc/{self.worker}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self):
        try:
            os.kill(self.master, signal.SIGTERM)
        except ProcessLookupError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    a = ap.parse_args()
    n = a.streams
    work = tempfile.mkdtemp(prefix="mesh-bench-relay-")
    procs, nodes = [], []
    try:
        media = os.path.join(work, "in.flv")
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440", "-t", "30", "-c:v", "libx264", "-preset", "veryfast",
                        "-b:v", "900k", "-maxrate", "900k", "-bufsize", "1800k", "-g", "50", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-b:a", "96k", "-f", "flv", media], check=True)
        kbps = os.path.getsize(media) * 8 / 30 / 1000

        # Ours: three nodes on relay tables.
        ip, rp, ep = port(), port(), port()
        streams = [f"s{i}" for i in range(n)]
        root = lambda s: {"node_id": "root", "node_url": f"rtmp://127.0.0.1:{rp}/relay", "node_key": "kr-" + s}
        edge = lambda s: {"node_id": "edge", "node_url": f"rtmp://127.0.0.1:{ep}/relay", "node_key": "ke-" + s,
                          "from": "root"}
        tables = {
            "ingest": {"version": 1, "role": "ingest", "publish": {s: {"key_sha256": sha("k-" + s)} for s in streams},
                       "ingest": {s: [root(s)] for s in streams}},
            "root": {"version": 1, "role": "root_relay", "ingest": {s: [root(s)] for s in streams},
                     "relay": {s: [edge(s)] for s in streams}},
            "edge": {"version": 1, "role": "relay", "relay": {s: [edge(s)] for s in streams}},
        }
        ours = {}
        for name, p, app in (("ingest", ip, "live"), ("root", rp, "relay"), ("edge", ep, "relay")):
            tf = os.path.join(work, f"{name}.json")
            json.dump(tables[name], open(tf, "w"))
            ours[name] = Nginx(work, "mesh-" + name, f"""    mesh_node_id {name};
    mesh_table_file {tf};
    server {{ listen 127.0.0.1:{p}; application {app} {{ mesh on; live on; }} }}""", True)
        nodes += ours.values()

        # Plain nginx-rtmp: static pushes, no checks.
        pi, pr, pe = port(), port(), port()
        plain = {
            "ingest": Nginx(work, "plain-ingest", f"    server {{ listen 127.0.0.1:{pi}; application live {{ live on; "
                                                  f"push rtmp://127.0.0.1:{pr}/relay; }} }}", False),
            "root": Nginx(work, "plain-root", f"    server {{ listen 127.0.0.1:{pr}; application relay {{ live on; "
                                              f"push rtmp://127.0.0.1:{pe}/relay; }} }}", False),
            "edge": Nginx(work, "plain-edge", f"    server {{ listen 127.0.0.1:{pe}; application relay {{ live on; }} }}",
                          False),
        }
        nodes += plain.values()

        for s in streams:
            for url in (f"rtmp://127.0.0.1:{ip}/live/{s}?key=k-{s}", f"rtmp://127.0.0.1:{pi}/live/{s}"):
                procs.append(subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                                               "-i", media, "-c", "copy", "-f", "flv", url],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(8)
        # Every stream reached both edges?
        for label, p in (("ours", ep), ("plain", pe)):
            probe = subprocess.run(["timeout", "20", "ffprobe", "-v", "error", "-read_intervals", "%+1", "-show_entries",
                                    "packet=codec_type", "-of", "csv=p=0", f"rtmp://127.0.0.1:{p}/relay/s{n - 1}"],
                                   capture_output=True, text=True).stdout
            if "video" not in probe:
                sys.exit(f"relay_cost: s{n - 1} does not reach the {label} edge")
        accepted = sum(1 for l in open(os.path.join(ours["edge"].dir, "error.log")) if "publish accepted" in l)
        if accepted < n:
            sys.exit(f"relay_cost: only {accepted} of {n} pushes admitted at our edge")

        before = {id(x): x.cpu() for x in nodes}
        t0 = time.time()
        time.sleep(a.seconds)
        secs = time.time() - t0
        after = {id(x): x.cpu() for x in nodes}
        stream_min = n * secs / 60
        per = lambda x: (after[id(x)] - before[id(x)]) / stream_min

        print(f"| node ({n} streams × {kbps:.0f} kbit/s, {secs:.0f} s) | ngx_rtmp_mesh CPU s / stream-min "
              f"| nginx-rtmp push CPU s / stream-min | ratio |")
        print("|---|---:|---:|---:|")
        tot_o = tot_p = 0.0
        for name in ("ingest", "root", "edge"):
            o, p = per(ours[name]), per(plain[name])
            tot_o += o
            tot_p += p
            print(f"| {name} | {o:.4f} | {p:.4f} | {o / p if p else float('nan'):.3f} |")
        print(f"| chain | {tot_o:.4f} | {tot_p:.4f} | {tot_o / tot_p if tot_p else float('nan'):.3f} |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        for x in nodes:
            x.stop()
        time.sleep(0.5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

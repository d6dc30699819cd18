#!/usr/bin/env python3
"""Benchmark 9: what one node sustains with 1, 2 and N workers (N = cores), ours against plain
nginx-rtmp at the same settings, in the same run.

For each worker count W, two nginx 1.22.1 + nginx-rtmp 1.2.2 servers run side by side, both
with `worker_processes W`, `rtmp_auto_push on` and one live stream (ffmpeg, 320x240, 25 fps):

- ours: our module, a standalone table (the publish key, a viewer secret), the stream
  transcoded on demand (source rendition, 2 s segments) and served by `mesh_media hls` (token
  checked on every request, playlists rewritten; with W > 1 the workers without the ffmpeg
  serve its files through its claim in the shared zone);
- plain: no module of ours, `live on`, and a plain `root` location serving the same directory.

Measured, runs alternating ours / plain, `--rounds` times:

- RTMP plays per second: complete play sessions (TCP connect, handshake, connect,
  createStream, play, until the first audio or video message; a session with none within 3 s
  fails), from two client processes (`--concurrency` sessions at a time in all), ours with a
  viewer token;
- HLS requests per second with wrk (2 threads, 32 keep-alive connections) on a media segment
  and on the media playlist.

Prints one markdown table: the rates, ours / plain per worker count, and each server's W / 1
scaling. The clients share the machine's cores with the servers: on a 2-core machine, the
scaling from 1 to 2 workers is bounded by the client taking its share.

    python3 bench/workers.py [--seconds 8] [--rounds 2] [--sessions 2000] [--concurrency 64]
"""

import argparse
import concurrent.futures
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "t/lib"))
from benchlib import NGINX, port, wait_port, write_conf  # noqa: E402
from rtmp_publish import Reader, chunk  # noqa: E402
from rtmp_raw import amf, full_name, parse_url, run_pool  # noqa: E402

SECRET = "bench-secret"
KEY = "k1"
FFMPEG_IN = ["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440"]
FFMPEG_OUT = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "50",
              "-c:a", "aac", "-f", "flv"]
TYPES = "types { application/vnd.apple.mpegurl m3u8; video/mp4 m4s; }"


def token(stream):
    exp = int(time.time()) + 3600
    mac = hmac.new(SECRET.encode(), f"{stream}\n{exp}".encode(), hashlib.sha256).hexdigest()
    return f"{exp}.{mac}"


def play_session(url, name, timeout):
    """One RTMP play until the first media message; whether it got one."""
    host, prt, app, tc = parse_url(url)
    try:
        s = socket.create_connection((host, prt), timeout=timeout)
    except OSError:
        return False
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.sendall(b"\x03" + bytes(8) + os.urandom(1528))
        r = Reader(s)
        s0s1 = r.need(1 + 1536)
        r.need(1536)
        s.sendall(s0s1[1:])
        s.sendall(chunk(2, 1, 0, struct.pack(">I", 65536)))
        s.sendall(chunk(3, 20, 0, amf("connect") + amf(1) + amf(
            {"app": app, "type": "nonprivate", "flashVer": "LNX 9,0,124,2", "tcUrl": tc})))
        while True:
            t, p = r.message()
            if t == 20 and b"_result" in p:
                break
        s.sendall(chunk(3, 20, 0, amf("createStream") + amf(2) + amf(None)))
        while True:
            t, p = r.message()
            if t == 20 and b"_result" in p:
                sid = int(struct.unpack(">d", p[-8:])[0])
                break
        s.sendall(chunk(8, 20, sid, amf("play") + amf(0) + amf(None) + amf(name)))
        while True:
            t, p = r.message()
            if t in (8, 9):
                return True
    except (ConnectionError, OSError):
        return False
    finally:
        s.close()


def plays_part(url, name, n, c):
    """`n` play sessions, `c` at a time (one client process): (got media, wall seconds)."""
    if PIN.get("client_cpus"):
        os.sched_setaffinity(0, PIN["client_cpus"])
    ok = []
    t0 = time.perf_counter()
    run_pool(n, c, lambda i: ok.append(play_session(url, name, 3)))
    return sum(ok), time.perf_counter() - t0


def plays(url, name, n, c):
    """Play sessions per second from two client processes; (rate, failures)."""
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        parts = list(ex.map(plays_part, [url] * 2, [name] * 2, [n // 2] * 2, [max(1, c // 2)] * 2))
    ok = sum(p[0] for p in parts)
    return ok / max(p[1] for p in parts), n // 2 * 2 - ok


# `--pin`: the servers (nginx, its ffmpegs, the publishers) on one set of CPUs, the clients on
# another (taskset), so that a rate measures the server, not the clients sharing its cores.
PIN = {"server": [], "client": []}


def cpu_s(pids):
    """User + system CPU seconds the processes `pids` have used (themselves, not their children)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url, secs, pids=()):
    """Requests per second, and the CPU microseconds `pids` (the server's workers) spent per
    request meanwhile."""
    c0 = cpu_s(pids)
    out = subprocess.run([*PIN["client"], "wrk", "-t2", "-c32", f"-d{secs}s", url], capture_output=True, text=True).stdout
    c1 = cpu_s(pids)
    rps = next((float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec:")), None)
    n = next((int(l.split()[0]) for l in out.splitlines() if " requests in " in l), 0)
    bad = next((int(l.split()[-1]) for l in out.splitlines() if "Non-2xx" in l), 0)
    if rps is None or bad:
        raise RuntimeError(f"wrk {url}: {out}")
    return rps, (c1 - c0) * 1e6 / max(n, 1)


class Server:
    def __init__(self, work, name, workers, mesh, media=None, symlinks=False):
        self.dir = os.path.join(work, name)
        os.makedirs(os.path.join(self.dir, "sock"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        for d in (self.dir, os.path.join(self.dir, "sock")):
            os.chmod(d, 0o777)
        self.rtmp, self.http = port(), port()
        main = f"rtmp_auto_push on;\nrtmp_socket_dir {self.dir}/sock;\n"
        if mesh:
            self.media = os.path.join(self.dir, "media")
            os.makedirs(self.media, exist_ok=True)
            os.chmod(self.media, 0o777)
            with open(os.path.join(self.dir, "table.json"), "w") as f:
                json.dump({"role": "standalone", "viewer_secret": SECRET,
                           "publish": {"cam1": {"key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}}}, f)
            rtmp = (f"    mesh_node_id bench;\n    mesh_table_file {self.dir}/table.json;\n"
                    f"    server {{ listen 127.0.0.1:{self.rtmp}; application live {{ mesh on; live on; }} }}\n")
            http = (f"    mesh_media_root {self.media};\n    mesh_ffmpeg /usr/bin/ffmpeg;\n"
                    f"    mesh_rtmp_source rtmp://127.0.0.1:{self.rtmp}/live;\n    mesh_rendition source;\n"
                    f"    mesh_segment 2s;\n    mesh_transcode_idle 600s;\n"
                    f"    server {{ listen 127.0.0.1:{self.http}; location /hls/ {{ mesh_media hls; }} }}\n")
        else:
            self.media = media
            rtmp = f"    server {{ listen 127.0.0.1:{self.rtmp}; application live {{ live on; }} }}\n"
            # (`symlinks`: the same `disable_symlinks on` below the root as `mesh_media` sets)
            guard = f" disable_symlinks on from={media};" if symlinks else ""
            http = f"    server {{ listen 127.0.0.1:{self.http}; location /cam1/ {{ root {media};{guard} }} }}\n"
        body = (f"rtmp {{\n    access_log off;\n{rtmp}}}\n"
                f"http {{\n    access_log off;\n    sendfile on;\n    {TYPES}\n{http}}}\n")
        write_conf(self.dir, body, mesh=mesh, worker_connections=4096, main=main, workers=workers)
        subprocess.run([*PIN["server"], NGINX, "-p", self.dir + "/", "-c", "nginx.conf", "-e",
                        self.dir + "/error.log"], check=True)
        if not (wait_port(self.rtmp) and wait_port(self.http)):
            raise RuntimeError(f"{name}: nginx does not listen: " + open(os.path.join(self.dir, "error.log")).read())
        pidfile = os.path.join(self.dir, "nginx.pid")
        end = time.time() + 5
        while not os.path.exists(pidfile) and time.time() < end:
            time.sleep(0.1)
        self.master = int(open(pidfile).read())
        args = f"?key={KEY}" if mesh else ""
        self.pub = subprocess.Popen([*PIN["server"], "ffmpeg", "-nostdin", "-loglevel", "error", *FFMPEG_IN, "-t", "3600",
                                     *FFMPEG_OUT, f"rtmp://127.0.0.1:{self.rtmp}/live/cam1{args}"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def workers(self):
        out = subprocess.run(["pgrep", "-P", str(self.master)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self):
        self.pub.terminate()
        self.pub.wait()
        try:
            os.kill(self.master, signal.SIGTERM)
        except ProcessLookupError:
            pass
        time.sleep(1)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except OSError:
        return 0, b""


def segment(media):
    chunks = sorted(n for n in os.listdir(os.path.join(media, "cam1")) if n.startswith("chunk-0-") and n.endswith(".m4s"))
    return chunks[-2]


def measure(work, workers, a):
    ours = Server(work, f"ours-{workers}", workers, mesh=True)
    peers = {"plain": Server(work, f"plain-{workers}", workers, mesh=False, media=ours.media)}
    if a.guarded:
        peers["guarded"] = Server(work, f"guarded-{workers}", workers, mesh=False, media=ours.media, symlinks=True)
    sides = ["ours", *peers]
    try:
        tok = token("cam1")
        time.sleep(2)
        st, _ = get(f"http://127.0.0.1:{ours.http}/hls/cam1/master.m3u8?token={tok}")
        if st != 200:
            raise RuntimeError(f"ours with {workers} workers: master playlist {st}")
        end = time.time() + 30
        while time.time() < end and len([n for n in os.listdir(f"{ours.media}/cam1") if n.startswith("chunk-0-")]) < 3:
            time.sleep(0.5)
        if a.hold:
            print(f"ours: http://127.0.0.1:{ours.http}/hls/cam1/media_0.m3u8?token={tok}; plain: "
                  f"http://127.0.0.1:{peers['plain'].http}/cam1/; workers: "
                  + subprocess.run(["pgrep", "-P", str(ours.master)], capture_output=True, text=True).stdout.split()[0]
                  + f"; {a.hold} s", flush=True)
            time.sleep(a.hold)
        res = {k: {s: [] for s in sides} for k in METRICS[a.only]}
        cpu = {k: {s: [] for s in sides} for k in ("segment", "playlist")}
        fails = dict.fromkeys(sides, 0)
        servers = {"ours": ours, **peers}
        for r in range(a.rounds):
            if "plays" in res:
                for side in ("ours", "plain"):
                    name = f"cam1?token={tok}" if side == "ours" else "cam1"
                    rate, failed = plays(f"rtmp://127.0.0.1:{servers[side].rtmp}/live", name, a.sessions,
                                         a.concurrency)
                    res["plays"][side].append(rate)
                    fails[side] += failed
            for k, file in (("segment", None), ("playlist", "media_0.m3u8")):
                if k not in res:
                    continue
                # (sides in turn, each round in another order)
                for side in sides[r % len(sides):] + sides[:r % len(sides)]:
                    srv = servers[side]
                    # the newest complete segment, picked again for each run: the window moves
                    # on (a segment stays about 14 s)
                    name = file or segment(ours.media)
                    url = (f"http://127.0.0.1:{srv.http}/hls/cam1/{name}?token={tok}" if side == "ours"
                           else f"http://127.0.0.1:{srv.http}/cam1/{name}")
                    rps, us = wrk(url, a.seconds, srv.workers())
                    res[k][side].append(rps)
                    cpu[k][side].append(us)
        ffmpegs = subprocess.run(["pgrep", "-f", f"{ours.media}/cam1"], capture_output=True, text=True).stdout.split()
        return res, fails, len(ffmpegs), cpu
    finally:
        ours.stop()
        for p in peers.values():
            p.stop()


METRICS = {"all": ("plays", "segment", "playlist"), "hls": ("segment", "playlist"), "plays": ("plays",)}
TITLES = {"plays": "RTMP plays/s", "segment": "HLS segment req/s", "playlist": "HLS media playlist req/s"}


def mean(xs):
    return sum(xs) / len(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=2000, help="RTMP play sessions per run")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--counts", help="worker counts, comma-separated (default: 1, 2 and the cores)")
    ap.add_argument("--only", choices=sorted(METRICS), default="all", help="what to measure")
    ap.add_argument("--guarded", action="store_true",
                    help="a third server: plain with `disable_symlinks on`, as mesh_media sets it")
    ap.add_argument("--pin", metavar="SERVER:CLIENT",
                    help="CPU lists for taskset, e.g. 0:1: the servers on the first, the clients on the second")
    ap.add_argument("--hold", type=int, default=0, help="seconds to wait before measuring (to attach perf)")
    a = ap.parse_args()
    for tool in ("wrk", "ffmpeg") + (("taskset",) if a.pin else ()):
        if not shutil.which(tool):
            sys.exit(f"bench/workers.py needs {tool}")
    if a.pin:
        server, client = a.pin.split(":")
        PIN["server"], PIN["client"] = ["taskset", "-c", server], ["taskset", "-c", client]
        PIN["client_cpus"] = {int(c) for c in client.split(",")}
    cores = os.cpu_count() or 1
    counts = sorted({int(c) for c in a.counts.split(",")} if a.counts else {1, 2, cores})
    work = tempfile.mkdtemp(prefix="mesh-bench-workers-")
    os.chmod(work, 0o755)
    rows = {}
    try:
        for w in counts:
            rows[w] = measure(work, w, a)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    metrics = METRICS[a.only]
    peers = ["plain", "guarded"] if a.guarded else ["plain"]
    head, cols = [], 0
    for k in metrics:
        sides = ["plain"] if k == "plays" else peers
        head += [f"{TITLES[k]} ours"] + [f"{p}" for p in sides] + [f"ours / {p}" for p in sides]
        cols += 1 + 2 * len(sides)
    pin = f"; pinned {a.pin}" if a.pin else ""
    print(f"| workers ({cores} cores{pin}; {a.rounds} rounds; plays: {a.sessions} sessions, {a.concurrency} at a time; "
          f"wrk 2 threads 32 connections {a.seconds} s) | " + " | ".join(head) + " | ffmpegs (ours) |")
    print("|---|" + "---:|" * (cols + 1))
    m = {w: {k: {s: mean(v[s]) for s in v} for k, v in rows[w][0].items()} for w in counts}
    for w in counts:
        cells = []
        for k in metrics:
            sides = ["plain"] if k == "plays" else peers
            o = m[w][k]["ours"]
            cells += [f"{o:.0f}"] + [f"{m[w][k][p]:.0f}" for p in sides] + [f"{o / m[w][k][p]:.3f}" for p in sides]
        f = rows[w][1]
        note = f" (failed plays: ours {f['ours']}, plain {f['plain']})" if f["ours"] or f["plain"] else ""
        print(f"| {w}{note} | " + " | ".join(cells) + f" | {rows[w][2]} |")
    hls = [k for k in metrics if k != "plays"]
    if hls:
        print()
        head = []
        for k in hls:
            head += [f"{TITLES[k].replace(' req/s', '')}: worker CPU µs/request ours"] + peers + [f"ours / {p}" for p in peers]
        print("| workers | " + " | ".join(head) + " |")
        print("|---|" + "---:|" * len(head))
        for w in counts:
            c = {k: {s: mean(v) for s, v in rows[w][3][k].items()} for k in hls}
            cells = []
            for k in hls:
                o = c[k]["ours"]
                cells += [f"{o:.1f}"] + [f"{c[k][p]:.1f}" for p in peers] + [f"{o / c[k][p]:.3f}" for p in peers]
            print(f"| {w} | " + " | ".join(cells) + " |")
    if 1 in m and len(counts) > 1:
        print()
        head = [f"{TITLES[k]} {s}" for k in metrics for s in ["ours"] + (["plain"] if k == "plays" else peers)]
        print("| scaling | " + " | ".join(head) + " |")
        print("|---|" + "---:|" * len(head))
        for w in counts[1:]:
            cells = []
            for k in metrics:
                sides = ["ours"] + (["plain"] if k == "plays" else peers)
                cells += [f"{m[w][k][s] / m[1][k][s]:.2f}×" for s in sides]
            print(f"| {w} / 1 workers | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

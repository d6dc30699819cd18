#!/usr/bin/env python3
"""A raw RTMP client for hostile traffic (Python 3 stdlib only; the protocol is rtmp_raw.py):
handshake, chunked messages, AMF0, the commands a broadcaster or player sends (connect,
createStream, publish, play, deleteStream, closeStream, FCPublish, releaseStream,
FCUnpublish), and everything they should not send.

    rtmp_fuzz.py check  --url rtmp://127.0.0.1:P/app --name cam1 --args key=k [--play]
                        [--hold S] [--src 127.0.0.7] [--repeat N --interval S]
        A well-behaved publish (or play): prints one JSON line per attempt with
        "accepted" (NetStream.Publish.Start / NetStream.Play.Start seen), the status code or
        "closed", and the seconds from TCP connect to the answer. Exit 0 when all accepted.
    rtmp_fuzz.py script --url ... STEP...
        One connection running the given steps (`script --help` lists them); prints a JSON
        summary: the statuses and results the server sent, and whether it closed first.
    rtmp_fuzz.py fuzz   --url ... --seed S --count N [--concurrency C] [--src-net 127.0.3]
        N connections, each a random sequence of commands (valid, malformed, truncated, odd
        names, abrupt closes) drawn from random.Random(f"{S}/{i}"); prints a JSON summary.
    rtmp_fuzz.py flood  --url ... --count N [--concurrency C] [--src-net 127.0.4 --src-count K]
                        [--leave 0.5] [--hold 0.5] [--rate R]
        N publishes of unknown streams with junk keys: a share `leave` closes right after
        sending publish, the rest wait up to `hold` s for an answer. Prints a JSON summary.

Source addresses: any 127.x.y.z is this machine; `--src-net A.B.C` spreads the connections
over A.B.C.1..A.B.C.K so per-address limits can be told from per-worker ones.
"""

import argparse
import json
import random
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
from rtmp_raw import Closed, Conn, amf, check_once, full_name, parse_url, run_pool, run_script, SCRIPT_HELP  # noqa: E402


# --- fuzz: seeded random sequences ------------------------------------------------------------

ODD_NAMES = [
    "x" * 4096, "../../etc/passwd", "a/../b", "..", "/", "cam\x00hidden", "\x00", "",
    " ", "caf\u00e9-\u2603-\U0001F600", "\u540d\u524d", "%00%2e%2e", "name with spaces",
    "cam1?key=a&key=b", "\ud800", "\r\nX-Injected: 1", "$(id)", "x" * 255, "x" * 256, "x" * 70000,
]

OPS = ["create", "publish", "play", "delete", "closestream", "fcpublish", "release", "fcunpublish",
       "malformed", "truncated", "wrongchunk", "chunksize", "media", "control", "wait", "sleep", "connect",
       "close"]
CHAOS = [8, 14, 8, 3, 3, 3, 3, 2, 3, 2, 2, 1, 3, 2, 6, 2, 1, 1]
MOSTLY_VALID = [10, 20, 12, 4, 4, 4, 4, 2, 0.5, 0.3, 0.3, 0.2, 2, 0.3, 6, 3, 0.5, 1]


class Fuzzer:
    def __init__(self, url, seed, good=None, src_net=None, src_count=64, trace=None):
        self.host, self.port, self.app, self.tc = parse_url(url)
        self.seed = seed
        self.good = good or []  # [(stream, key)] the master allows
        self.src_net, self.src_count = src_net, src_count
        self.trace = trace
        self.lock = threading.Lock()
        self.stats = {"connections": 0, "accepted": 0, "closed_by_server": 0, "errors": 0, "ops": 0}

    def name(self, r, odd=0.4):
        """A stream name: valid ones the master is asked about (few, so connections collide
        on them) or the master's good ones; with probability `odd` an odd one (refused at
        once, or cut by nginx-rtmp)."""
        if r.random() < odd:
            if r.random() < 0.7:
                return r.choice(ODD_NAMES)
            return "".join(chr(r.randrange(1, 0x250)) for _ in range(r.randrange(1, 40)))
        if self.good and r.random() < 0.25:
            return r.choice(self.good)[0]
        return "fz%d" % r.randrange(40)

    def args(self, r, stream, odd=0.35):
        x = r.random()
        goods = [k for s, k in self.good if s == stream]
        if x < 0.35 and goods:
            return "key=" + goods[0]
        if x < 1 - odd:
            return "key=junk%d" % r.randrange(8 if odd >= 0.35 else 1000)
        if x < 0.72:
            return ""
        if x < 0.78:
            return "key=" + "k" * 4096
        if x < 0.84:
            return "node=%s&key=junk" % r.choice(["root-1", "x", "../n"])
        if x < 0.9:
            return "token=%d.%s" % (r.randrange(1 << 40), "ab" * 32)
        return "key=%s&key=junk&%s" % (r.choice(["", "\x00", "%00"]), "a=" * r.randrange(50))

    def garbage(self, r, n=None):
        return bytes(r.randrange(256) for _ in range(n if n is not None else r.randrange(1, 300)))

    def malformed_amf(self, r):
        x = r.randrange(7)
        if x == 0:
            return amf(r.choice(["publish", "play", "connect", "createStream"])) + self.garbage(r)
        if x == 1:  # a string whose length runs past the end
            return b"\x02\xff\xff" + b"publish"
        if x == 2:  # an object that never ends
            return amf("connect") + amf(1) + b"\x03" + b"\x00\x03app" + amf("live") * 50
        if x == 3:  # deep nesting
            return amf("connect") + amf(1) + b"\x03\x00\x01a" * 200
        if x == 4:  # wrong types in place of the name
            return amf("publish") + amf(0) + amf(None) + amf(3.5) + amf(True)
        if x == 5:  # an unknown type marker
            return amf("play") + amf(0) + b"\x05" + b"\x11" + self.garbage(r, 20)
        return self.garbage(r)

    def one(self, i):
        r = random.Random("%d/%d" % (self.seed, i))
        ops = []
        src = "%s.%d" % (self.src_net, 1 + r.randrange(self.src_count)) if self.src_net else None
        try:
            c = Conn(self.host, self.port, src=src, timeout=3)
        except OSError:
            self.count("errors")
            return
        sid = 1
        try:
            x = r.random()
            if x < 0.03:
                ops.append("tcp-close")
                return
            if x < 0.08:
                ops.append("bad-handshake")
                kind = r.randrange(4)
                if kind == 0:
                    c.send(b"\x03" + bytes(r.randrange(1, 1536)))
                elif kind == 1:
                    c.send(bytes([r.randrange(256)]) + self.garbage(r, 1536))
                elif kind == 2:
                    c.send(self.garbage(r, r.randrange(1, 4000)))
                else:
                    c.send(b"\x03" + bytes(1536))
                    c.poll(0.2)
                return
            c.handshake(3)
            # most connections speak valid RTMP with valid names (so questions go to the
            # master and commands pile up while they wait), the rest anything at all
            chaos = r.random() < 0.3
            odd = 0.4 if chaos else 0.05
            weights = CHAOS if chaos else MOSTLY_VALID
            if r.random() < (0.4 if chaos else 0.15):
                sizes = [1, 2, 60, 128, 4096, 65536, 1 << 24, 0, 0x7FFFFFFF, 0xFFFFFFFF] if chaos else [60, 128, 4096, 65536]
                n = r.choice(sizes)
                ops.append("chunk %d" % n)
                c.set_chunk_size(n)
            if r.random() < (0.8 if chaos else 0.97):
                ops.append("connect")
                extra = {}
                if chaos and r.random() < 0.2:
                    extra = {"app": r.choice(ODD_NAMES), "tcUrl": r.choice(ODD_NAMES)}
                c.connect(self.app, self.tc, extra)
                if r.random() < 0.8:
                    c.poll(0.5, lambda k, d: k in ("_result", "_error", "closed"))
            for _ in range(r.randrange(1, 12)):
                if c.closed:
                    break
                op = r.choices(OPS, weights)[0]
                ops.append(op)
                self.count("ops")
                if op == "create":
                    n = len(c.streams)
                    c.create_stream()
                    if r.random() < 0.7:
                        c.poll(0.5, lambda k, d: k in ("_error", "closed") or len(c.streams) > n)
                    if c.streams:
                        sid = c.streams[-1]
                elif op in ("publish", "play"):
                    if not c.streams and r.random() < (0.5 if chaos else 0.95):
                        # nginx-rtmp ignores publish and play before createStream
                        ops.append("create")
                        c.create_stream()
                        c.poll(0.5, lambda k, d: k in ("_error", "closed") or c.streams)
                        sid = c.streams[-1] if c.streams else sid
                    name = self.name(r, odd)
                    full = full_name(name, self.args(r, name, odd))
                    use = sid if r.random() < 0.85 else r.choice([0, 1, 2, 77, 0xFFFFFFFF])
                    ops[-1] += " %r sid=%d" % (full[:60], use)
                    (c.publish if op == "publish" else c.play)(full, use)
                    if r.random() < 0.4:
                        c.poll(r.uniform(0, 2.5), lambda k, d: k == "status")
                elif op == "delete":
                    c.delete_stream(sid if r.random() < 0.8 else r.randrange(10))
                elif op == "closestream":
                    c.close_stream(sid)
                elif op == "fcpublish":
                    c.fc_publish(full_name(self.name(r), self.args(r, "")))
                elif op == "release":
                    c.release_stream(self.name(r))
                elif op == "fcunpublish":
                    c.fc_unpublish(self.name(r))
                elif op == "malformed":
                    c.msg(r.choice([20, 17, 18, 15]), self.malformed_amf(r), sid=r.choice([0, sid]))
                elif op == "truncated":
                    p = amf("publish") + amf(0) + amf(None) + amf(self.name(r)) + amf("live")
                    cut = r.randrange(len(p))
                    c.msg(20, p[:cut], sid=sid, csid=r.choice([3, 8, 63, 64, 400]), length=len(p))
                    if r.random() < 0.5:
                        c.create_stream()  # lands inside the unfinished message
                elif op == "wrongchunk":
                    p = amf("play") + amf(0) + amf(None) + amf(self.name(r))
                    c.msg(20, p, sid=sid, size=r.choice([1, 7, 64, 200, 5000]))
                elif op == "chunksize":
                    c.set_chunk_size(r.choice([1, 128, 4096, 0, 0x7FFFFFFF]))
                elif op == "media":
                    c.msg(r.choice([8, 9, 18, 22]), self.garbage(r, r.randrange(0, 9000)), sid=sid,
                          csid=r.choice([4, 6, 7]), ts=r.choice([0, 40, 0xFFFFFF, 1 << 31]))
                elif op == "control":
                    c.msg(r.choice([2, 3, 4, 5, 6, 7, 255]), self.garbage(r, r.randrange(0, 12)), csid=2)
                elif op == "wait":
                    c.poll(r.uniform(0, 2.5))
                elif op == "sleep":
                    time.sleep(r.uniform(0, 0.3))
                elif op == "connect":
                    c.connect(self.app, self.tc)
                elif op == "close":
                    break
            if any(e[2] in ("NetStream.Publish.Start", "NetStream.Play.Start") for e in c.events):
                self.count("accepted")
        except (Closed, OSError, socket.timeout):
            pass
        finally:
            if c.closed:
                self.count("closed_by_server")
                ops.append("(closed by the server)")
            end = r.choice(["close", "rst", "linger"])
            if end == "linger" and not c.closed:
                c.poll(r.uniform(0, 1.5))
            c.close(rst=end == "rst")
            self.count("connections")
            if self.trace:
                with self.lock:
                    self.trace.write("%.3f %d %s: %s | %s\n" % (time.time(), i, src or "-", " ; ".join(ops), end))

    def count(self, k):
        with self.lock:
            self.stats[k] += 1


# --- flood: unknown keys, many at once --------------------------------------------------------

def flood(url, count, concurrency, src_net=None, src_count=8, leave=0.5, hold=0.5, prefix="fl", seed=0,
          linger=0.0, rst=False, rate=0.0):
    host, port, app, tc = parse_url(url)
    st = {"sent": 0, "accepted": 0, "refused": 0, "waiting": 0, "left": 0, "errors": 0}
    lock = threading.Lock()
    tag = "%x" % random.Random(seed).randrange(1 << 32)

    def one(i):
        if rate > 0:
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        src = "%s.%d" % (src_net, 1 + i % src_count) if src_net else None
        what = "errors"
        try:
            c = Conn(host, port, src=src, timeout=10)
        except OSError:
            with lock:
                st["errors"] += 1
            return
        try:
            sid = c.setup(app, tc, 10)
            if sid is not None:
                c.publish("%s%s%d?key=junk%d" % (prefix, tag, i, i), sid)
                with lock:
                    st["sent"] += 1
                if (i * 7919 % 1000) < leave * 1000:
                    what = "left"
                    if linger > 0:
                        c.poll(linger)
                else:
                    ev = c.poll(hold, lambda k, d: k == "closed" or (k == "status" and d.startswith("NetStream.Publish.")))
                    what = "waiting" if ev is None else "accepted" if ev[1] == "NetStream.Publish.Start" else "refused"
        except (Closed, OSError):
            what = "refused" if c.closed else "errors"
        finally:
            c.close(rst=rst)
        with lock:
            st[what] += 1

    t0 = time.perf_counter()
    run_pool(count, concurrency, one)
    st["wall_s"] = round(time.perf_counter() - t0, 2)
    return st


# --- command line -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check")
    p.add_argument("--url", required=True)
    p.add_argument("--name", required=True, help="stream name; {i} is the attempt number")
    p.add_argument("--args", default="")
    p.add_argument("--play", action="store_true")
    p.add_argument("--hold", type=float, default=0)
    p.add_argument("--src")
    p.add_argument("--unix", help="connect over this unix socket (the URL still names app and tcUrl)")
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--interval", type=float, default=0)
    p = sub.add_parser("script", epilog=SCRIPT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--src")
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--repeat", type=int, default=1, help="run the steps N times; {i} in a step is the run")
    p.add_argument("steps", nargs="*")
    p = sub.add_parser("fuzz")
    p.add_argument("--url", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--good", action="append", default=[], help="stream:key the master allows")
    p.add_argument("--src-net")
    p.add_argument("--src-count", type=int, default=64)
    p.add_argument("--trace", help="append one line per connection (what it did) to this file")
    p = sub.add_parser("flood")
    p.add_argument("--url", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--src-net")
    p.add_argument("--src-count", type=int, default=8)
    p.add_argument("--leave", type=float, default=0.5)
    p.add_argument("--hold", type=float, default=0.5)
    p.add_argument("--linger", type=float, default=0, help="seconds a leaving client reads before it closes")
    p.add_argument("--rst", action="store_true", help="close with a reset instead of a FIN")
    p.add_argument("--rate", type=float, default=0, help="connections started per second at most")
    p.add_argument("--prefix", default="fl")
    p.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    if a.cmd == "check":
        ok = True
        for i in range(a.repeat):
            t = time.monotonic()
            r = check_once(a.url, full_name(a.name.format(i=i), a.args), a.play, a.hold, a.src, a.timeout, a.unix)
            r["t"] = round(time.time(), 3)
            print(json.dumps(r), flush=True)
            ok = ok and r["accepted"]
            if i + 1 < a.repeat:
                time.sleep(max(0, a.interval - (time.monotonic() - t)))
        return 0 if ok else 1
    if a.cmd == "script":
        for i in range(a.repeat):
            steps = [st.replace("{i}", str(i)) for st in a.steps]
            print(json.dumps(run_script(a.url, steps, a.src, a.timeout)), flush=True)
        return 0
    if a.cmd == "fuzz":
        good = [tuple(g.split(":", 1)) for g in a.good]
        trace = open(a.trace, "a", buffering=1) if a.trace else None
        f = Fuzzer(a.url, a.seed, good, a.src_net, a.src_count, trace)
        t0 = time.perf_counter()
        run_pool(a.count, a.concurrency, f.one)
        f.stats["wall_s"] = round(time.perf_counter() - t0, 2)
        f.stats["seed"] = a.seed
        print(json.dumps(f.stats), flush=True)
        return 0
    if a.cmd == "flood":
        print(json.dumps(flood(a.url, a.count, a.concurrency, a.src_net, a.src_count, a.leave, a.hold,
                               a.prefix, a.seed, a.linger, a.rst, a.rate)), flush=True)
        return 0
    return 2


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    sys.exit(main())

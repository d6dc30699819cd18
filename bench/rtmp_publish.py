#!/usr/bin/env python3
"""Admission latency: open N RTMP publish sessions (handshake, connect, createStream, publish)
and time each from TCP connect to the server's answer to `publish` (NetStream.Publish.Start =
accepted; anything else or a closed connection = refused). Prints p50/p99 in ms as JSON.

    rtmp_publish.py --url rtmp://127.0.0.1:1935/live --name cam1 --args key=k1 -n 1000 -c 20

What it sends is t/lib/rtmp_raw.py's (AMF0, chunks), and so is the pool of sessions; what it
reads is a lean reader of its own that only looks for the answers it waits for: the client's
CPU per session is part of every latency here (rtmp_raw's Conn, which decodes every message,
measured about 0.2 ms more per session, and 1.5 times the p50 at 10 at a time).
"""

import argparse
import json
import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "t/lib"))
from rtmp_raw import TCP_QUICKACK, amf, chunks, full_name, parse_url, run_pool  # noqa: E402


def chunk(csid, mtype, sid, payload):
    # our chunk size is set to 65536 first, so one chunk per message
    return chunks(csid, mtype, sid, payload, 65536)


class Reader:
    """Reassembles the server's chunk stream into messages."""

    def __init__(self, sock):
        self.s, self.buf, self.csize, self.prev, self.partial = sock, b"", 128, {}, {}

    def need(self, n):
        while len(self.buf) < n:
            # ack at once: nginx-rtmp's socket is not TCP_NODELAY, so a delayed ack would hold
            # its next small write for 40 ms and hide everything else in that wait
            self.s.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def message(self):
        while True:
            b = self.need(1)[0]
            fmt, csid = b >> 6, b & 0x3F
            if csid == 0:
                csid = 64 + self.need(1)[0]
            elif csid == 1:
                x = self.need(2)
                csid = 64 + x[0] + 256 * x[1]
            h = dict(self.prev.get(csid, {"len": 0, "type": 0, "sid": 0, "ts": 0}))
            if fmt <= 2:
                ts = int.from_bytes(self.need(3), "big")
            if fmt <= 1:
                h["len"] = int.from_bytes(self.need(3), "big")
                h["type"] = self.need(1)[0]
            if fmt == 0:
                h["sid"] = struct.unpack("<I", self.need(4))[0]
            if fmt <= 2 and ts == 0xFFFFFF:
                self.need(4)
            self.prev[csid] = h
            got = self.partial.get(csid, b"")
            take = min(self.csize, h["len"] - len(got))
            got += self.need(take)
            if len(got) < h["len"]:
                self.partial[csid] = got
                continue
            self.partial.pop(csid, None)
            if h["type"] == 1:
                self.csize = struct.unpack(">I", got[:4])[0] & 0x7FFFFFFF
                continue
            return h["type"], got


def session(url, name, timeout):
    """One publish; returns (accepted, seconds)."""
    host, port, app, tc = parse_url(url)
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.sendall(b"\x03" + bytes(8) + os.urandom(1528))
        r = Reader(s)
        s0s1 = r.need(1 + 1536)
        r.need(1536)
        s.sendall(s0s1[1:])
        s.sendall(chunk(2, 1, 0, struct.pack(">I", 65536)))
        s.sendall(chunk(3, 20, 0, amf("connect") + amf(1) + amf(
            {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; bench)", "tcUrl": tc})))
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
        s.sendall(chunk(4, 20, sid, amf("publish") + amf(0) + amf(None) + amf(name) + amf("live")))
        while True:
            t, p = r.message()
            if t == 20 and b"onStatus" in p:
                return b"NetStream.Publish.Start" in p, time.perf_counter() - t0
    except (ConnectionError, OSError):
        return False, time.perf_counter() - t0
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="rtmp://host:port/app")
    ap.add_argument("--name", default="bench{i}", help="stream name; {i} is the session number")
    ap.add_argument("--args", default="", help="query string, e.g. key=k1")
    ap.add_argument("-n", type=int, default=1000, help="sessions")
    ap.add_argument("-c", type=int, default=1, help="concurrent sessions")
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    results = []  # list.append is atomic: the pool's threads share it

    def one(i):
        results.append(session(a.url, full_name(a.name.format(i=i), a.args), a.timeout))

    t0 = time.perf_counter()
    run_pool(a.n, a.c, one)
    wall = time.perf_counter() - t0
    lat = sorted(x[1] for x in results)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    print(json.dumps({"sessions": len(results), "accepted": sum(1 for x in results if x[0]),
                      "p50_ms": round(pct(0.5), 3), "p99_ms": round(pct(0.99), 3), "wall_s": round(wall, 2)}))


if __name__ == "__main__":
    main()

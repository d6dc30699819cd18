#!/usr/bin/env python3
"""Admission latency: open N RTMP publish sessions (handshake, connect, createStream, publish)
and time each from TCP connect to the server's answer to `publish` (NetStream.Publish.Start =
accepted; anything else or a closed connection = refused). Prints p50/p99 in ms as JSON.

    rtmp_publish.py --url rtmp://127.0.0.1:1935/live --name cam1 --args key=k1 -n 1000 -c 20
"""

import argparse
import json
import os
import socket
import struct
import threading
import time
from urllib.parse import urlsplit


TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


def amf_str(s):
    b = s.encode()
    return b"\x02" + struct.pack(">H", len(b)) + b


def amf_num(n):
    return b"\x00" + struct.pack(">d", n)


def amf_obj(d):
    out = b"\x03"
    for k, v in d.items():
        kb = k.encode()
        out += struct.pack(">H", len(kb)) + kb + amf_str(v)
    return out + b"\x00\x00\x09"


def chunk(csid, mtype, sid, payload):
    # fmt 0 header; our chunk size is set to 65536 first, so one chunk per message
    return bytes([csid]) + (0).to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([mtype]) \
        + struct.pack("<I", sid) + payload


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


def session(host, port, app, name, timeout):
    """One publish; returns (accepted, seconds)."""
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
        tc = "rtmp://%s:%d/%s" % (host, port, app)
        s.sendall(chunk(3, 20, 0, amf_str("connect") + amf_num(1) + amf_obj(
            {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; bench)", "tcUrl": tc})))
        while True:
            t, p = r.message()
            if t == 20 and b"_result" in p:
                break
        s.sendall(chunk(3, 20, 0, amf_str("createStream") + amf_num(2) + b"\x05"))
        while True:
            t, p = r.message()
            if t == 20 and b"_result" in p:
                sid = int(struct.unpack(">d", p[-8:])[0])
                break
        s.sendall(chunk(4, 20, sid, amf_str("publish") + amf_num(0) + b"\x05" + amf_str(name) + amf_str("live")))
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
    u = urlsplit(a.url)
    app = u.path.strip("/")
    results, lock, left = [], threading.Lock(), [a.n]

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
                i = left[0]
            name = a.name.format(i=i) + ("?" + a.args if a.args else "")
            r = session(u.hostname, u.port or 1935, app, name, a.timeout)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(a.c)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(x[1] for x in results)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    print(json.dumps({"sessions": len(results), "accepted": sum(1 for x in results if x[0]),
                      "p50_ms": round(pct(0.5), 3), "p99_ms": round(pct(0.99), 3), "wall_s": round(wall, 2)}))


if __name__ == "__main__":
    main()

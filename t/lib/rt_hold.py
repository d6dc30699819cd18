#!/usr/bin/env python3
"""Many RTMP sessions at once, each admitted and then held open (t/redteam.t).

    rt_hold.py --url rtmp://127.0.0.1:P/app --name NAME [--args A] [--play] --count N
               [--concurrency C] [--hold S]

Opens N connections (C at a time), each handshake, connect, createStream, then one publish
(or play) of NAME?A; once every connection has its answer, prints one JSON line
{"accepted": n, "refused": n, "codes": {...}} and keeps the connections open (reading, so the
server's sends never block) for S seconds or until SIGTERM.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rtmp_raw import Closed, Conn, parse_url, run_pool  # noqa: E402


def one(url, name, play, timeout):
    host, port, app, tc = parse_url(url)
    try:
        c = Conn(host, port, timeout=timeout)
        sid = c.setup(app, tc, timeout)
        if sid is None:
            return None, "closed"
        (c.play if play else c.publish)(name, sid)
        want = "NetStream.Play.Start" if play else "NetStream.Publish.Start"
        ev = c.poll(timeout, lambda k, d: k == "closed" or (k == "status" and d.startswith(
            ("NetStream.Publish.", "NetStream.Play.Start", "NetStream.Play.StreamNotFound", "NetStream.Play.Failed"))))
        code = (ev[1] or ev[0]) if ev else "timeout"
        return (c if code == want else None), code
    except (Closed, OSError):
        return None, "closed"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--args", default="")
    ap.add_argument("--play", action="store_true")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--hold", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=10)
    a = ap.parse_args()
    name = a.name + ("?" + a.args if a.args else "")
    held, codes, lock = [], {}, threading.Lock()

    def session(_):
        c, code = one(a.url, name, a.play, a.timeout)
        with lock:
            codes[code] = codes.get(code, 0) + 1
            if c:
                held.append(c)

    run_pool(a.count, a.concurrency, session)
    print(json.dumps({"accepted": len(held), "refused": a.count - len(held), "codes": codes}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + a.hold
    # Keep reading so that nothing the server sends ever blocks it.
    while not stop.is_set() and time.monotonic() < deadline:
        for c in held:
            if not c.closed:
                c.poll(0.001)
        stop.wait(0.2)
    for c in held:
        c.close()
    return 0


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    sys.exit(main())

#!/usr/bin/env python3
"""A scriptable fake master for the tests: real HTTP on loopback, the protocol's endpoints
with signatures checked and made, per-node tables with long poll, and control endpoints
(unsigned, under /_control/) to set tables, answers and faults and to read every request.

    fake_master.py --port P --key K

Faults (POST /_control/fault {"endpoint": E|"*", "mode": M, "secs": S}):
  ok, stall (hold the request S seconds, then answer), 500, garbage, truncated, huge,
  badsig, nosig, skew (timestamp 1000 s off), close (drop the connection), badtable,
  lostpoll (streams: hold a long poll, wait > 0, S seconds deaf to changes, as a master that
  lost it; a fetch with wait=0 is answered).

Auth answers: POST /_control/auth {"stream", "allow", "reason", "ttl_s", "credential",
"delay", "delay_max", "wrong_delay"} for one stream (the delay is drawn from [delay, delay_max]
per question; a wrong credential is answered after wrong_delay, default 0);
/_control/auth_default {...} for every stream without its own (default: deny "unknown
stream", no delay); /_control/auth_serial {"on": true} answers one auth question at a time
(a slow master); /_control/count {"endpoint", "prefix"} counts the requests received to an
endpoint (whose stream starts with prefix) without fetching them all.

Epochs: POST /_control/epoch {"epoch": E} puts E in announce and heartbeat answers (a table's
own epoch is its "epoch" field); /_control/rollback {"on": true} sends a node its table
whatever the poll's since (a master that went back).
"""

import argparse
import hashlib
import hmac
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ENDPOINTS = ("announce", "heartbeat", "streams", "auth", "route")


class State:
    def __init__(self, key):
        self.key = key.encode()
        self.lock = threading.Condition()
        self.tables = {}  # node_id -> table dict
        self.roles = {}  # node_id -> role for announce/heartbeat replies
        self.auth = {}  # stream -> {"allow", "ttl_s", "reason", "delay"}
        self.routes = {}  # stream -> {"status", "tables": {node_id: table}}
        self.faults = {}  # endpoint -> (mode, secs)
        self.requests = []
        self.heartbeat_interval = None
        self.auth_default = {"allow": False, "reason": "unknown stream"}
        self.auth_serial = None  # a Lock while auth answers one at a time
        self.epoch = None  # the epoch announce and heartbeat answers carry
        self.rollback = False  # send the table whatever the poll's since (a master gone back)


def sign_response(key, status, ts, nonce, method, path, body):
    """docs/protocol.md: the answer is bound to the request (its nonce, method and path)."""
    msg = "\n".join(["mesh-response-v2", str(status), str(ts), nonce, method, path,
                     hashlib.sha256(body).hexdigest()]).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def verify_request(key, method, path, headers, body):
    ts, sig = headers.get("X-Mesh-Timestamp"), headers.get("X-Mesh-Signature")
    nonce = headers.get("X-Mesh-Nonce")
    if not ts or not sig or not nonce:
        return False
    msg = "\n".join(["mesh-request-v2", method, path, ts, nonce, hashlib.sha256(body).hexdigest()]).encode()
    good = hmac.new(key, msg, hashlib.sha256).hexdigest()
    return hmac.compare_digest(good, sig) and abs(int(ts) - time.time()) <= 300


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, *args):
        pass

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body, signed=True, mode="ok"):
        st = self.state
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        ts = int(time.time())
        if mode == "garbage":
            body = b"<html>not json</html>"
        elif mode == "truncated":
            body = body[: max(1, len(body) // 2)]
        elif mode == "huge":
            body = b'{"version": 1, "pad": "' + b"x" * (65 << 20) + b'"}'
        elif mode == "badtable":
            body = json.dumps({"version": 999, "relay": {"../etc": []}}).encode()
        elif mode == "skew":
            ts -= 1000
        if mode == "500":
            status, body = 500, b'{"error": "boom"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if signed and mode != "nosig":
            nonce = self.headers.get("X-Mesh-Nonce") or ""
            sig = sign_response(st.key, status, ts, nonce, self.command, self.path, body)
            if mode == "badsig":
                sig = "0" * 64
            self.send_header("X-Mesh-Timestamp", str(ts))
            self.send_header("X-Mesh-Signature", sig)
        self.end_headers()
        if status != 304:
            self.wfile.write(body)

    def record(self, endpoint, body, sig_ok):
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode(errors="replace")
        with self.state.lock:
            self.state.requests.append({
                "endpoint": endpoint, "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": parsed, "sig_ok": sig_ok, "t": time.time(),
            })

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def route(self):
        st = self.state
        url = urlsplit(self.path)
        body = self.read_body()
        if url.path.startswith("/_control/"):
            return self.control(url.path[len("/_control/"):], body)
        endpoint = url.path.strip("/").split("/")[-1]
        if endpoint not in ENDPOINTS:
            return self.send(404, {"error": "no such endpoint"}, signed=False)
        sig_ok = verify_request(st.key, self.command, self.path, self.headers, body)
        self.record(endpoint, body, sig_ok)
        if not sig_ok:
            return self.send(401, {"error": "bad signature"})
        mode, secs = self.fault(endpoint)
        if mode == "close":
            self.close_connection = True
            return
        if mode == "stall":
            time.sleep(secs)
        if mode == "lostpoll" and float(parse_qs(url.query).get("wait", ["0"])[0]) > 0:
            time.sleep(secs)
        req = json.loads(body) if body else {}
        node = req.get("node_id") or parse_qs(url.query).get("node_id", [""])[0]
        self.endpoint = endpoint
        getattr(self, "ep_" + endpoint)(node, req, url)

    def fault(self, endpoint):
        with self.state.lock:
            return self.state.faults.get(endpoint) or self.state.faults.get("*") or ("ok", 0)

    def answer(self, status, body):
        """Send an endpoint's answer with the fault in force now (a long poll may have waited)."""
        mode = self.fault(self.endpoint)[0]
        if mode in ("stall", "lostpoll"):
            mode = "ok"
        if status == 304 and mode in ("garbage", "truncated", "huge", "badtable"):
            mode = "ok"
        self.send(status, body, mode=mode)

    def ep_announce(self, node, req, url):
        st = self.state
        with st.lock:
            reply = {"table_refresh_s": 25}
            if st.epoch:
                reply["epoch"] = st.epoch
            if node in st.roles:
                reply["role"] = st.roles[node]
            if st.heartbeat_interval:
                reply["heartbeat_interval_s"] = st.heartbeat_interval
        self.answer(200, reply)

    def ep_heartbeat(self, node, req, url):
        st = self.state
        with st.lock:
            reply = {"table_version": st.tables.get(node, {}).get("version", 0)}
            if st.epoch:
                reply["epoch"] = st.epoch
            if node in st.roles:
                reply["role"] = st.roles[node]
        self.answer(200, reply)

    def ep_streams(self, node, req, url):
        st = self.state
        q = parse_qs(url.query)
        since = int(q.get("since", ["0"])[0])
        wait = float(q.get("wait", ["0"])[0])
        deadline = time.time() + wait
        if st.rollback:
            since = -1
        with st.lock:
            while st.tables.get(node, {}).get("version", -1) <= since:
                left = deadline - time.time()
                if left <= 0:
                    break
                st.lock.wait(left)
            table = st.tables.get(node)
        if table is None or table.get("version", 0) <= since:
            return self.answer(304, b"")
        self.answer(200, table)

    def ep_auth(self, node, req, url):
        st = self.state
        with st.lock:
            a = dict(st.auth.get(req.get("stream"), st.auth_default))
            serial = st.auth_serial
        cred = req.get("key") or req.get("token")
        delay = a.pop("delay", 0)
        delay = random.uniform(delay, a.pop("delay_max", delay))
        if "credential" in a and a["credential"] != cred:
            delay = a.get("wrong_delay", 0)
            a = {"allow": False, "reason": "wrong credential", "ttl_s": a.get("ttl_s", 60)}
        a.pop("wrong_delay", None)
        a.pop("credential", None)
        if serial is None:
            time.sleep(delay)
            return self.answer(200, a)
        with serial:
            time.sleep(delay)
            self.answer(200, a)

    def ep_route(self, node, req, url):
        st = self.state
        stream = req.get("stream")
        with st.lock:
            r = st.routes.get(stream)
            if r is None:
                reply = {"status": "unknown", "table_version": 0}
            else:
                for n, t in r.get("tables", {}).items():
                    st.tables[n] = t
                st.lock.notify_all()
                reply = {"status": r.get("status", "routed"),
                         "table_version": st.tables.get(node, {}).get("version", 0)}
        self.answer(200, reply)

    def control(self, what, body):
        st = self.state
        data = json.loads(body) if body else {}
        with st.lock:
            if what == "table":
                st.tables[data["node_id"]] = data["table"]
                st.lock.notify_all()
            elif what == "role":
                st.roles[data["node_id"]] = data["role"]
            elif what == "auth":
                st.auth[data.pop("stream")] = data
            elif what == "auth_default":
                st.auth_default = data
            elif what == "auth_serial":
                st.auth_serial = threading.Lock() if data.get("on") else None
            elif what == "count":
                pre, ep = data.get("prefix", ""), data.get("endpoint", "auth")
                stream = lambda r: str(r["body"].get("stream", "")) if isinstance(r["body"], dict) else ""
                n = sum(1 for r in st.requests if r["endpoint"] == ep and stream(r).startswith(pre))
                return self.send(200, {"n": n}, signed=False)
            elif what == "route":
                st.routes[data.pop("stream")] = data
            elif what == "fault":
                if data.get("mode", "ok") == "ok":
                    st.faults.pop(data["endpoint"], None)
                else:
                    st.faults[data["endpoint"]] = (data["mode"], data.get("secs", 0))
            elif what == "heartbeat_interval":
                st.heartbeat_interval = data["secs"]
            elif what == "epoch":
                st.epoch = data.get("epoch")
            elif what == "rollback":
                st.rollback = bool(data.get("on"))
            elif what == "requests":
                return self.send(200, st.requests, signed=False)
            elif what == "clear":
                st.requests.clear()
            else:
                return self.send(404, {"error": "no such control"}, signed=False)
        self.send(200, {"ok": True}, signed=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    Handler.state = State(args.key)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

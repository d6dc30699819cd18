#!/usr/bin/env python3
"""A man in the middle between nodes and the master, for the tests of replayed answers and
requests (docs/protocol.md, "Nonces"): it forwards every request to the master and records
the master's last answer per endpoint; per endpoint it can instead hold a request unanswered
(a master that never answers), answer it with a recorded answer (its status, signature
headers and body, byte for byte), or send a recorded request to the master again.

    mitm_proxy.py --port P --master http://127.0.0.1:M

Control (unsigned, under /_mitm/):
  POST /_mitm/mode {"endpoint": E, "mode": "pass"|"hold"|"replay", "match": TEXT}
      replay answers with the last recorded answer of E whose body contains TEXT
  GET  /_mitm/seen       {"E": count of answers recorded, ...}
  POST /_mitm/resend {"endpoint": E} the last request to E, sent to the master again as it
      was (its headers and body): {"status": S, "body": ...}
"""

import argparse
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MESH_HEADERS = ("X-Mesh-Node", "X-Mesh-Timestamp", "X-Mesh-Nonce", "X-Mesh-Signature", "Content-Type")


class State:
    def __init__(self, master):
        u = urlsplit(master)
        self.host, self.port = u.hostname, u.port
        self.lock = threading.Lock()
        self.modes = {}  # endpoint -> (mode, match)
        self.answers = {}  # endpoint -> [(status, headers, body)]
        self.requests = {}  # endpoint -> (method, path, headers, body)


def forward(st, method, path, headers, body):
    c = http.client.HTTPConnection(st.host, st.port, timeout=120)
    c.request(method, path, body=body or None, headers=headers)
    r = c.getresponse()
    data = r.read()
    out = {k: v for k, v in r.getheaders() if k.lower().startswith("x-mesh-") or k.lower() in ("retry-after",)}
    c.close()
    return r.status, out, data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, *args):
        pass

    def reply(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PUT(self):
        self.route()

    def route(self):
        st = self.state
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path = urlsplit(self.path).path
        if path.startswith("/_mitm/"):
            return self.control(path[len("/_mitm/"):], body)
        endpoint = path.strip("/").split("/")[-1]
        headers = {k: self.headers[k] for k in MESH_HEADERS if self.headers.get(k) is not None}
        with st.lock:
            st.requests[endpoint] = (self.command, self.path, headers, body)
            mode, match = st.modes.get(endpoint, ("pass", None))
        if mode == "hold":
            while True:
                time.sleep(0.2)
                with st.lock:
                    if st.modes.get(endpoint, ("pass", None))[0] != "hold":
                        break
        if mode == "replay":
            with st.lock:
                found = [a for a in st.answers.get(endpoint, []) if match is None or match.encode() in a[2]]
            if found:
                status, h, data = found[-1]
                return self.reply(status, h, data)
        try:
            status, h, data = forward(st, self.command, self.path, headers, body)
        except OSError as e:
            return self.reply(502, {}, json.dumps({"error": str(e)}).encode())
        if 200 <= status < 300:
            with st.lock:
                st.answers.setdefault(endpoint, []).append((status, h, data))
                del st.answers[endpoint][:-20]
        self.reply(status, h, data)

    def control(self, what, body):
        st = self.state
        req = json.loads(body) if body else {}
        if what == "mode":
            with st.lock:
                st.modes[req["endpoint"]] = (req["mode"], req.get("match"))
            out = {"ok": True}
        elif what == "seen":
            with st.lock:
                out = {k: len(v) for k, v in st.answers.items()}
        elif what == "resend":
            with st.lock:
                method, path, headers, rbody = st.requests[req["endpoint"]]
            status, _, data = forward(st, method, path, headers, rbody)
            out = {"status": status, "body": data.decode(errors="replace")}
        else:
            return self.reply(404, {}, b'{"error": "no such control"}')
        self.reply(200, {"Content-Type": "application/json"}, json.dumps(out).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--master", required=True)
    args = ap.parse_args()
    Handler.state = State(args.master)
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()

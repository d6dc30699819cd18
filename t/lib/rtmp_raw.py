"""The RTMP a client speaks, raw (Python 3 stdlib only): AMF0 values (and bytes posing as
them), chunked messages with any chunk size or a length that lies, a connection that records
what the server said, and two ways to use it: `check_once`, a well-behaved publish or play that
reports whether it was accepted, and `run_script`, one connection's named steps; `run_pool`
runs many sessions at once.
t/lib/rtmp_fuzz.py is the command line.
"""

import os
import socket
import struct
import threading
import time
from urllib.parse import urlsplit

TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


# --- AMF0 -------------------------------------------------------------------------------------

class Raw:
    """Bytes sent verbatim where an AMF value goes (malformed AMF)."""

    def __init__(self, data):
        self.data = data


def _utf8(s):
    return s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s


def amf(v):
    if isinstance(v, Raw):
        return v.data
    if v is None:
        return b"\x05"
    if isinstance(v, bool):
        return b"\x01" + (b"\x01" if v else b"\x00")
    if isinstance(v, (int, float)):
        return b"\x00" + struct.pack(">d", float(v))
    if isinstance(v, (str, bytes)):
        b = _utf8(v)
        if len(b) > 0xFFFF:
            return b"\x0c" + struct.pack(">I", len(b)) + b
        return b"\x02" + struct.pack(">H", len(b)) + b
    if isinstance(v, dict):
        out = b"\x03"
        for k, x in v.items():
            kb = _utf8(k)
            out += struct.pack(">H", len(kb)) + kb + amf(x)
        return out + b"\x00\x00\x09"
    if isinstance(v, (list, tuple)):
        return b"\x0a" + struct.pack(">I", len(v)) + b"".join(amf(x) for x in v)
    raise TypeError(type(v))


class _Short(Exception):
    pass


def amf_decode(b):
    """Every AMF0 value in b, as far as it parses."""
    i = 0

    def take(n):
        nonlocal i
        if i + n > len(b):
            raise _Short
        r = b[i:i + n]
        i += n
        return r

    def value():
        t = take(1)[0]
        if t == 0x00:
            return struct.unpack(">d", take(8))[0]
        if t == 0x01:
            return take(1)[0] != 0
        if t == 0x02:
            return take(struct.unpack(">H", take(2))[0]).decode("utf-8", "replace")
        if t == 0x0C:
            return take(struct.unpack(">I", take(4))[0]).decode("utf-8", "replace")
        if t in (0x03, 0x08):
            if t == 0x08:
                take(4)
            d = {}
            while True:
                k = take(struct.unpack(">H", take(2))[0]).decode("utf-8", "replace")
                if not k and b[i:i + 1] == b"\x09":
                    take(1)
                    return d
                d[k] = value()
        if t == 0x0A:
            return [value() for _ in range(struct.unpack(">I", take(4))[0])]
        if t in (0x05, 0x06):
            return None
        if t == 0x0B:
            take(10)
            return None
        raise _Short

    out = []
    try:
        while i < len(b):
            out.append(value())
    except _Short:
        pass
    return out


# --- chunk stream -----------------------------------------------------------------------------

def basic_header(fmt, csid):
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    c = csid - 64
    return bytes([(fmt << 6) | 1, c & 0xFF, c >> 8])


def chunks(csid, mtype, sid, payload, size, ts=0, length=None):
    """A message as chunks of `size` (fmt 0, then fmt 3); `length` may lie about its size."""
    n = len(payload) if length is None else length
    out = [basic_header(0, csid), min(ts, 0xFFFFFF).to_bytes(3, "big"), (n & 0xFFFFFF).to_bytes(3, "big"),
           bytes([mtype & 0xFF]), struct.pack("<I", sid & 0xFFFFFFFF)]
    if ts >= 0xFFFFFF:
        out.append(struct.pack(">I", ts & 0xFFFFFFFF))
    size = max(1, size)
    out.append(payload[:size])
    for off in range(size, len(payload), size):
        out.append(basic_header(3, csid))
        out.append(payload[off:off + size])
    return b"".join(out)


class Closed(Exception):
    pass


class Conn:
    """One RTMP connection. Every send or read failure marks it closed (never raises except
    Closed from reads)."""

    def __init__(self, host, port, src=None, timeout=5.0, unix=None):
        if unix:
            # over a unix socket (host and port stay in the tcUrl only)
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(unix)
        else:
            self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if src:
                self.s.bind((src, 0))
            self.s.settimeout(timeout)
            self.s.connect((host, port))
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.in_chunk = 128
        self.out_chunk = 128
        self.prev = {}
        self.partial = {}
        self.closed = False
        self.events = []  # (seconds since start, kind, detail)
        self.t0 = time.perf_counter()
        self.txn = 1
        self.streams = []  # stream ids the server gave

    # low level
    def send(self, data):
        if self.closed:
            return False
        try:
            self.s.sendall(data)
            return True
        except OSError:
            self.closed = True
            return False

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout
        self.s.settimeout(left)
        try:
            if self.s.family != socket.AF_UNIX:
                self.s.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            d = self.s.recv(65536)
        except socket.timeout:
            raise
        except OSError:
            d = b""
        if not d:
            self.closed = True
            raise Closed
        self.buf += d

    def _parse_chunk(self):
        """One chunk from the buffer, or None when more bytes are needed; a whole message
        returns (type, sid, payload)."""
        b, i = self.buf, 0

        def need(n):
            nonlocal i
            if len(b) - i < n:
                raise _Short
            r = b[i:i + n]
            i += n
            return r

        try:
            x = need(1)[0]
            fmt, csid = x >> 6, x & 0x3F
            if csid == 0:
                csid = 64 + need(1)[0]
            elif csid == 1:
                y = need(2)
                csid = 64 + y[0] + 256 * y[1]
            h = dict(self.prev.get(csid, {"len": 0, "type": 0, "sid": 0}))
            ts = 0
            if fmt <= 2:
                ts = int.from_bytes(need(3), "big")
            if fmt <= 1:
                h["len"] = int.from_bytes(need(3), "big")
                h["type"] = need(1)[0]
            if fmt == 0:
                h["sid"] = struct.unpack("<I", need(4))[0]
            if fmt <= 2 and ts == 0xFFFFFF:
                need(4)
            got = self.partial.get(csid, b"")
            take = min(self.in_chunk, h["len"] - len(got))
            got += need(take)
        except _Short:
            return None
        self.buf = b[i:]
        self.prev[csid] = h
        if len(got) < h["len"]:
            self.partial[csid] = got
            return ()
        self.partial.pop(csid, None)
        return (h["type"], h["sid"], got)

    def message(self, deadline):
        """The next whole message from the server (raises socket.timeout or Closed)."""
        while True:
            m = self._parse_chunk()
            if m is None:
                self._recv(deadline)
                continue
            if m == ():
                continue
            t, sid, p = m
            if t == 1 and len(p) >= 4:
                self.in_chunk = max(1, struct.unpack(">I", p[:4])[0] & 0x7FFFFFFF)
                continue
            return t, sid, p

    def poll(self, secs, until=None):
        """Read for up to `secs`, noting commands and statuses; stops early when `until`
        (a predicate on (kind, detail)) holds. Returns the matching event or None."""
        deadline = time.monotonic() + secs
        while not self.closed:
            try:
                t, sid, p = self.message(deadline)
            except (socket.timeout, TimeoutError):
                return None
            except Closed:
                self.note("closed", "")
                return ("closed", "") if until and until("closed", "") else None
            if t not in (20, 17):
                continue
            vals = amf_decode(p[1:] if t == 17 else p)
            if not vals:
                continue
            name = vals[0]
            if name == "onStatus":
                info = next((v for v in vals if isinstance(v, dict)), {})
                ev = ("status", str(info.get("code", "")))
            elif name in ("_result", "_error"):
                ev = (name, vals[3] if len(vals) > 3 else None)
                if name == "_result" and len(vals) > 3 and isinstance(vals[3], float):
                    self.streams.append(int(vals[3]))
            else:
                ev = ("command", str(name))
            self.note(*ev)
            if until and until(*ev):
                return ev
        return None

    def note(self, kind, detail):
        self.events.append((round(time.perf_counter() - self.t0, 4), kind, detail))

    def close(self, rst=False):
        if rst and not self.closed:
            try:
                self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.closed = True
        self.s.close()

    # the protocol
    def handshake(self, timeout=5):
        if not self.send(b"\x03" + bytes(8) + os.urandom(1528)):
            raise Closed
        deadline = time.monotonic() + timeout
        while len(self.buf) < 1 + 1536 * 2:
            self._recv(deadline)
        s1 = self.buf[1:1537]
        self.buf = self.buf[1 + 1536 * 2:]
        if not self.send(s1):
            raise Closed

    def msg(self, mtype, payload, sid=0, csid=3, ts=0, size=None, length=None):
        return self.send(chunks(csid, mtype, sid, payload, size or self.out_chunk, ts, length))

    def set_chunk_size(self, n):
        self.msg(1, struct.pack(">I", n & 0xFFFFFFFF), csid=2)
        self.out_chunk = max(1, n & 0x7FFFFFFF)

    def command(self, name, *args, sid=0, csid=3, txn=None):
        if txn is None:
            self.txn += 1
            txn = self.txn
        return self.msg(20, amf(name) + amf(txn) + b"".join(amf(a) for a in args), sid=sid, csid=csid)

    def connect(self, app, tc_url, extra=None):
        o = {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; rtmp_fuzz)", "tcUrl": tc_url}
        o.update(extra or {})
        return self.command("connect", o, txn=1)

    def create_stream(self):
        return self.command("createStream", None)

    def publish(self, name, sid, kind="live"):
        return self.command("publish", None, name, kind, sid=sid, csid=8, txn=0)

    def play(self, name, sid):
        return self.command("play", None, name, -2000.0, -1.0, sid=sid, csid=8, txn=0)

    def delete_stream(self, sid):
        return self.command("deleteStream", None, float(sid), txn=0)

    def close_stream(self, sid):
        return self.command("closeStream", None, sid=sid, csid=8, txn=0)

    def fc_publish(self, name):
        return self.command("FCPublish", None, name)

    def release_stream(self, name):
        return self.command("releaseStream", None, name)

    def fc_unpublish(self, name):
        return self.command("FCUnpublish", None, name)

    def setup(self, app, tc_url, timeout=5):
        """handshake, connect, createStream: the stream id, or None."""
        self.handshake(timeout)
        self.set_chunk_size(4096)
        self.connect(app, tc_url)
        if not self.poll(timeout, lambda k, d: k in ("_result", "_error", "closed")) or self.closed:
            return None
        self.create_stream()
        ev = self.poll(timeout, lambda k, d: k in ("_result", "_error", "closed") and (k != "_result" or d is not None))
        return int(ev[1]) if ev and ev[0] == "_result" and isinstance(ev[1], float) else None


def parse_url(url):
    u = urlsplit(url)
    app = u.path.strip("/")
    return u.hostname, u.port or 1935, app, "rtmp://%s:%d/%s" % (u.hostname, u.port or 1935, app)


def full_name(name, args):
    return name + ("?" + args if args else "")


# --- check: a well-behaved client -------------------------------------------------------------

def check_once(url, name, play=False, hold=0.0, src=None, timeout=10.0, unix=None):
    host, port, app, tc = parse_url(url)
    t0 = time.perf_counter()
    want = "NetStream.Play.Start" if play else "NetStream.Publish.Start"
    out = {"name": name.split("?")[0], "accepted": False, "code": "", "secs": None}
    try:
        c = Conn(host, port, src=src, timeout=timeout, unix=unix)
    except OSError as e:
        out.update(code="connect: %s" % e.__class__.__name__, secs=time.perf_counter() - t0)
        return out
    try:
        sid = c.setup(app, tc, timeout)
        if sid is None:
            out["code"] = "closed" if c.closed else "no stream"
        else:
            (c.play if play else c.publish)(name, sid)
            deciding = ("NetStream.Publish.", "NetStream.Play.Start", "NetStream.Play.StreamNotFound",
                        "NetStream.Play.Failed", "NetConnection.")
            ev = c.poll(timeout, lambda k, d: k == "closed" or (k == "status" and d.startswith(deciding)))
            out["secs"] = time.perf_counter() - t0
            out["code"] = ev[1] or ev[0] if ev else "timeout"
            out["accepted"] = bool(ev) and ev[1] == want
            if out["accepted"] and hold > 0:
                c.poll(hold, lambda k, d: k == "closed")
                out["held"] = not c.closed
    except (Closed, OSError):
        out["code"] = "closed"
    finally:
        c.close()
    if out["secs"] is None:
        out["secs"] = time.perf_counter() - t0
    out["secs"] = round(out["secs"], 4)
    return out


# --- pool: many sessions at once -------------------------------------------------------------

def run_pool(n, concurrency, fn):
    """Call fn(i) for i in 0..n-1 from `concurrency` threads, each taking the next i."""
    left = [n]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
                i = n - 1 - left[0]
            fn(i)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(concurrency, n)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- script: one connection, named steps ------------------------------------------------------

SCRIPT_HELP = """steps (each one argument; NAME may carry ?args):
  handshake | connect | create (createStream; its id becomes the current stream)
  publish NAME [SID] | play NAME [SID] | fcpublish NAME | release NAME | fcunpublish NAME
  deletestream [SID] | closestream [SID] | chunk N (set chunk size) | raw HEX
  wait S (read for S s) | sleep S (do not read) | close | rst"""


def run_script(url, steps, src=None, timeout=10.0):
    host, port, app, tc = parse_url(url)
    c = Conn(host, port, src=src, timeout=timeout)
    sid = 1
    try:
        for step in steps:
            w = step.split(" ", 2)
            op, a = w[0], w[1:]
            sid_arg = lambda i: int(a[i]) if len(a) > i else sid
            if op == "handshake":
                c.handshake(timeout)
            elif op == "connect":
                c.connect(app, tc)
                c.poll(timeout, lambda k, d: k in ("_result", "_error", "closed"))
            elif op == "create":
                n = len(c.streams)
                c.create_stream()
                c.poll(timeout, lambda k, d: k in ("_error", "closed") or len(c.streams) > n)
                sid = c.streams[-1] if len(c.streams) > n else sid
            elif op == "publish":
                c.publish(a[0], sid_arg(1))
            elif op == "play":
                c.play(a[0], sid_arg(1))
            elif op == "fcpublish":
                c.fc_publish(a[0])
            elif op == "release":
                c.release_stream(a[0])
            elif op == "fcunpublish":
                c.fc_unpublish(a[0])
            elif op == "deletestream":
                c.delete_stream(sid_arg(0))
            elif op == "closestream":
                c.close_stream(sid_arg(0))
            elif op == "chunk":
                c.set_chunk_size(int(a[0]))
            elif op == "raw":
                c.send(bytes.fromhex(a[0]))
            elif op == "wait":
                c.poll(float(a[0]))
            elif op == "sleep":
                time.sleep(float(a[0]))
            elif op in ("close", "rst"):
                break
            else:
                raise SystemExit("unknown step %r\n%s" % (step, SCRIPT_HELP))
        if steps and steps[-1] not in ("close", "rst"):
            c.poll(0.05)
    except (Closed, OSError):
        pass
    closed_by_server = c.closed
    c.close(rst=bool(steps) and steps[-1] == "rst")
    return {"events": c.events, "closed_by_server": closed_by_server, "streams": c.streams}

"""Helpers shared by the Python benchmarks."""

import os
import signal
import socket
import subprocess
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.path.join(TOP, "dist/sbin/nginx")
MODS = os.path.join(TOP, "dist/modules")


# Ports as t/lib/Mesh/Test.pm's free_port picks them: never from the kernel's ephemeral range
# (32768-60999 by default), where it picks the local ports of outgoing connections; from 20000-31999,
# starting at a slice of 200 derived from the process id, probed on INADDR_ANY and [::] as
# nginx's `listen <port>` binds, without SO_REUSEADDR.
PORT_LO, PORT_HI, SLICE = 20000, 31999, 200
_used = set()
_next = [PORT_LO + (os.getpid() % ((PORT_HI - PORT_LO + 1) // SLICE)) * SLICE]


def _ephemeral():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _free(p, ephemeral=_ephemeral()):
    if not PORT_LO <= p <= PORT_HI or ephemeral[0] <= p <= ephemeral[1]:
        return False
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, p))
        except OSError:
            return False
        finally:
            s.close()
    return True


def port(count=1):
    """A free TCP port (or the first of `count` in a row), never the same twice in a process."""
    for _ in range(PORT_HI - PORT_LO + 1):
        p = _next[0]
        _next[0] = PORT_LO if p + 1 > PORT_HI else p + 1
        run = range(p, p + count)
        if p + count - 1 <= PORT_HI and all(q not in _used and _free(q) for q in run):
            _used.update(run)
            return p
    raise RuntimeError("no free port in %d-%d" % (PORT_LO, PORT_HI))


def write_conf(d, body, mesh=True, error_log="notice", worker_connections=1024, main="", mods=MODS, workers=1):
    """`d`/nginx.conf: the rtmp module (and ours, with `mesh`) loaded from `mods`, `workers`
    workers (`main`: more main-level directives), its error log (at `error_log`) and pid file in
    `d`, then `body`."""
    load = "load_module %s/ngx_rtmp_module.so;\n" % mods
    if mesh:
        load += "load_module %s/ngx_rtmp_mesh_module.so;\n" % mods
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write("%sworker_processes %d;\n%serror_log %s/error.log %s;\npid %s/nginx.pid;\n"
                "events { worker_connections %d; }\n%s" % (load, workers, main, d, error_log, d, worker_connections, body))


def nginx(d, *args, check=True):
    """Run nginx with `d` as its prefix and d/nginx.conf (`-t` to test it); the CompletedProcess."""
    return subprocess.run([NGINX, "-p", d + "/", "-c", "nginx.conf", "-e", d + "/error.log", *args],
                          check=check, capture_output="-t" in args)


def stop_nginx(d):
    """TERM to the nginx whose pid file is in `d`, if it runs."""
    try:
        with open(os.path.join(d, "nginx.pid")) as f:
            os.kill(int(f.read()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


def wait_port(p, secs=10):
    """Until something listens on 127.0.0.1:`p` (at most `secs`); whether it does."""
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", p), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


if __name__ == "__main__":  # for shell scripts: benchlib.py [n] prints n free ports
    import sys

    print(" ".join(str(port()) for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1)))

"""Helpers shared by the Python benchmarks."""

import os
import socket

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.path.join(TOP, "dist/sbin/nginx")
MODS = os.path.join(TOP, "dist/modules")


def port():
    """A free TCP port on loopback."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

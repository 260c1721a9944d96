"""Which addresses a service's processes listen on: for the tests that every server we start is on loopback only."""

from __future__ import annotations

import re
import subprocess

LOOPBACK = ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]")  # the last: a JVM's IPv6 socket bound to 127.0.0.1


def listening(pids: set[int]) -> dict[int, set[str]]:
    """pid -> the local addresses (host:port) its TCP sockets listen on, from `ss -ltnpH`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found: dict[int, set[str]] = {}
    for line in out.splitlines():
        fields = line.split()
        local = fields[3]
        for pid in (int(p) for p in re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                found.setdefault(pid, set()).add(local)
    return found


def group_members(leader: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(leader)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def on_loopback(address: str) -> bool:
    return address.rsplit(":", 1)[0] in LOOPBACK

"""
What a soak test needs around a process: its memory and open files (from /proc), its
metrics (scraped from inside its namespace), a seeded scale for CI or full runs, and a
place to write the figures it measured (for C{bench/soak.py} and the README's table).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

FULL = os.environ.get("UDPSUITE_SOAK") == "full"
"""Whether this is the large run (C{bench/soak.py}), not CI's small one."""


def size(ci: int, full: int) -> int:
    """C{full} in the large run, else C{ci}."""
    return full if FULL else ci


def seconds(ci: float, full: float) -> float:
    """C{full} in the large run, else C{ci}."""
    return full if FULL else ci


def record(section: str, **figures: Any) -> None:
    """
    Keep C{figures} of C{section}: printed (C{pytest -s} shows them) and appended as one
    JSON line to C{$UDPSUITE_SOAK_REPORT} when it is set.
    """
    line = json.dumps({"section": section, "full": FULL, **figures}, sort_keys=True)
    print(line)
    report = os.environ.get("UDPSUITE_SOAK_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(line + "\n")


def rss(pid: int) -> dict[str, int]:
    """The resident set now and at its peak (C{VmRSS}, C{VmHWM}), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", status, re.M))
    return {"rss": int(fields["VmRSS"]), "peak": int(fields["VmHWM"])}


def _sockets(pid: int) -> dict[str, str]:
    """Socket inode -> C{"udp 127.0.0.1:6969"} (state too for TCP), from the process's view."""
    found = {}
    for kind in ("udp", "tcp", "udp6", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            host, port = fields[1].split(":")
            if len(host) == 8:
                address = ".".join(str(b) for b in reversed(bytes.fromhex(host)))
            else:
                address = host
            state = "" if kind.startswith("udp") else f" state {fields[3]}"
            found[fields[9]] = f"{kind} {address}:{int(port, 16)}{state}"
    return found


def openFiles(pid: int) -> dict[str, str]:
    """
    The process's open file descriptors: number -> what it points at (a socket as its
    protocol and local address).
    """
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
    sockets = _sockets(pid)
    for fd, target in fds.items():
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match and match.group(1) in sockets:
            fds[fd] = sockets[match.group(1)]
    return fds


_SAMPLE = re.compile(rb"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def parseMetrics(text: bytes) -> dict[str, float]:
    """A Prometheus scrape as C{{"name{labels}": value}} (comments dropped)."""
    return {
        (m.group(1) + (m.group(2) or b"")).decode(): float(m.group(3))
        for m in _SAMPLE.finditer(text)
    }

"""
A UDP flood from many loopback source addresses, run by the soak tests inside their own
namespace (C{python -m tests.soak.flood PLAN.json}): plain non-blocking sockets, one per
source (127.0.1.1, 127.0.1.2, ...), sending in turn at C{rate} datagrams a second for
C{seconds}, and reading what comes back. Prints one JSON line: datagrams sent, send errors
(a full send buffer), the replies and reply bytes each source got, and the rate reached.

The plan (JSON): target [host, port]; sources; rate; seconds; size (payload bytes); seed.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any


def drain(sockets: list[socket.socket], replies: list[int], replyBytes: list[int]) -> None:
    for index, sock in enumerate(sockets):
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            replies[index] += 1
            replyBytes[index] += len(data)


def flood(plan: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(plan["seed"])
    target = (plan["target"][0], plan["target"][1])
    sockets = []
    for n in range(plan["sources"]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((f"127.0.{1 + n // 250}.{1 + n % 250}", 0))
        sock.setblocking(False)
        sockets.append(sock)
    payloads = [rng.randbytes(plan["size"]) for _ in range(16)]
    replies = [0] * len(sockets)
    replyBytes = [0] * len(sockets)
    rate, seconds, count = plan["rate"], plan["seconds"], len(sockets)
    sent = errors = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = min(int(elapsed * rate) + 1, int(seconds * rate))
        while sent < due:
            try:
                sockets[sent % count].sendto(payloads[sent & 15], target)
            except BlockingIOError:
                errors += 1
            sent += 1
            if sent % 2000 == 0:
                drain(sockets, replies, replyBytes)
    took = time.monotonic() - started
    time.sleep(0.5)
    drain(sockets, replies, replyBytes)
    return {
        "sent": sent,
        "sendErrors": errors,
        "seconds": took,
        "rate": sent / took,
        "bytesSent": sent * plan["size"],
        "replies": replies,
        "replyBytes": replyBytes,
    }


if __name__ == "__main__":
    result = flood(json.loads(Path(sys.argv[1]).read_text()))
    sys.stdout.write(json.dumps(result) + "\n")

"""
Send one datagram and print where the answer came from: for tests that run it inside a
network namespace (C{ip netns exec NS python tests/udpprobe.py ...}).

    python tests/udpprobe.py SERVER PORT CLIENT HEXPAYLOAD

prints C{SOURCE-ADDRESS HEX-OF-THE-ANSWER}; exits 1 after 10 s without an answer.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

SCRIPT = str(Path(__file__).resolve())


def main() -> None:
    server, port, client, payload = sys.argv[1:5]
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((client, 0))
        s.settimeout(10)
        s.sendto(bytes.fromhex(payload), (server, int(port)))
        try:
            data, source = s.recvfrom(65536)
        except TimeoutError:
            sys.exit("no answer in 10 s")
        sys.stdout.write(f"{source[0]} {data.hex()}\n")


if __name__ == "__main__":
    main()

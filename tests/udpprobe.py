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
from typing import Any

SCRIPT = str(Path(__file__).resolve())


async def probe(
    reactor: Any, namespace: list[str], server: str, port: int, client: str, payload: bytes
) -> tuple[bytes, bytes]:
    """
    Run this script inside C{namespace} (a command prefix, see the C{loopbackNamespace}
    fixture): send C{payload} from C{client} to C{server}:C{port}; return the answer's
    source address and the answer.
    """
    from tests.process import runProcess

    argv = [*namespace, sys.executable, SCRIPT, server, str(port), client, payload.hex()]
    out, err, code = await runProcess(reactor, argv, timeout=30)
    assert code == 0, err
    source, answer = out.split()
    return source, bytes.fromhex(answer.decode())


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

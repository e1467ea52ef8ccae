"""
UDP echo benchmark: twisted_udpsuite's echo server against a minimal asyncio
echo server, driven by the same load generator, on 127.0.0.1.

Each server runs in its own process.  For each round, and for each server in
turn (interleaved, so machine noise hits both alike), the generator measures:

- throughput: datagrams/s with a window of WINDOW datagrams in flight for
  SECONDS seconds (a reply frees a slot; a slot is re-armed on timeout);
- latency: the round-trip time of PINGS one-at-a-time datagrams.

It prints the medians per server and the ratio ours / asyncio.  The suite's
server runs with its rate limits off (they would cap a single-source load
generator by design); with them on, it is the limit that is measured.

    python bench/echo_bench.py [--rounds 5] [--seconds 2] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time

OURS = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from twisted_udpsuite.echo.server import EchoPolicy, UDPEchoProtocol
    policy = EchoPolicy(rate=None, globalRate=None, deniedSourcePorts=frozenset())
    port = reactor.listenUDP(0, UDPEchoProtocol(reactor, policy), interface="127.0.0.1",
                             maxPacketSize=65536)
    print(port.getHost().port, flush=True)
    reactor.run()
    """
)

ASYNCIO = textwrap.dedent(
    """
    import asyncio

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport
        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        print(transport.get_extra_info("sockname")[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def startServer(code: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def throughput(port: int, seconds: float, size: int, window: int) -> float:
    """Datagrams/s echoed with C{window} in flight."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.2)
    payload = os.urandom(size)
    for _ in range(window):
        sock.send(payload)
    received = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        try:
            sock.recv(65536)
            received += 1
        except TimeoutError:
            for _ in range(window):  # replies were lost: re-arm the window
                sock.send(payload)
            continue
        sock.send(payload)
    elapsed = time.perf_counter() - start
    sock.close()
    return received / elapsed


def latency(port: int, pings: int, size: int) -> float:
    """Median round-trip time in microseconds, one datagram at a time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(1.0)
    payload = os.urandom(size)
    times = []
    for _ in range(pings):
        t0 = time.perf_counter()
        sock.send(payload)
        sock.recv(65536)
        times.append((time.perf_counter() - t0) * 1e6)
    sock.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--pings", type=int, default=2000)
    args = parser.parse_args()

    servers = {"twisted_udpsuite": startServer(OURS), "asyncio minimal": startServer(ASYNCIO)}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    rtts: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _, port in servers.values():  # warm-up
            latency(port, 200, args.size)
        for _ in range(args.rounds):
            for name, (_, port) in servers.items():
                rates[name].append(throughput(port, args.seconds, args.size, args.window))
                rtts[name].append(latency(port, args.pings, args.size))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)

    print(f"UDP echo, {args.size}-byte datagrams, 127.0.0.1, {args.rounds} interleaved rounds")
    print(f"{'server':<18} {'datagrams/s':>12} {'median RTT us':>14}")
    for name in servers:
        print(
            f"{name:<18} {statistics.median(rates[name]):>12,.0f} "
            f"{statistics.median(rtts[name]):>14.1f}"
        )
    ours, theirs = "twisted_udpsuite", "asyncio minimal"
    print(
        f"ratio ours/asyncio: throughput "
        f"{statistics.median(rates[ours]) / statistics.median(rates[theirs]):.2f}x, "
        f"RTT {statistics.median(rtts[ours]) / statistics.median(rtts[theirs]):.2f}x "
        f"(lower RTT is better)"
    )


if __name__ == "__main__":
    main()

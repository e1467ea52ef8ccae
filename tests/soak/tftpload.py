"""
Many TFTP transfers at once with the suite's own client library, run by the soak test inside
its lossy namespace (C{python -m tests.soak.tftpload PLAN.json}): downloads of every file in
the served root and uploads of every file in an upload directory, with a seeded mix of
block and window sizes, from many loopback source addresses (127.0.0.2, .3, ...: one per
few transfers, as many clients would be). Prints one JSON line: each transfer's outcome and
the wall time.

The plan (JSON): server [host, port]; root (the served directory, to compare downloads
with); uploads (a directory whose files are uploaded under their own names); downloads
(how many); out (where downloads land); seed; clients (source addresses to spread over).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from twisted_udpsuite.tftp import client

BLOCK_SIZES = (None, 512, 1024, 1428, 4096, 8192)
WINDOW_SIZES = (None, 1, 4, 8, 16)


class FromAddress:
    """A reactor whose UDP ports bind one loopback address: transfers of another client."""

    def __init__(self, reactor: Any, address: str) -> None:
        self._reactor = reactor
        self._address = address

    def listenUDP(self, port: int, protocol: Any, interface: str = "", **kw: Any) -> Any:
        return self._reactor.listenUDP(port, protocol, interface=self._address, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def transfers(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The transfers to run, with their options, in a seeded order."""
    rng = random.Random(plan["seed"])
    served = sorted(p.name for p in Path(plan["root"]).iterdir() if p.is_file())
    uploads = sorted(p.name for p in Path(plan["uploads"]).iterdir())
    jobs = [
        {"kind": "get", "name": served[n % len(served)], "n": n} for n in range(plan["downloads"])
    ]
    jobs += [{"kind": "put", "name": name} for name in uploads]
    rng.shuffle(jobs)
    for n, job in enumerate(jobs):
        job["blksize"] = rng.choice(BLOCK_SIZES)
        job["windowsize"] = rng.choice(WINDOW_SIZES)
        job["source"] = f"127.0.0.{2 + n % plan['clients']}"
    return jobs


async def run(reactor: Any, plan: dict[str, Any]) -> dict[str, Any]:
    server = (plan["server"][0], plan["server"][1])
    out = Path(plan["out"])
    jobs = transfers(plan)
    started = time.monotonic()

    async def one(job: dict[str, Any]) -> dict[str, Any]:
        via = FromAddress(reactor, job["source"])
        options = {"blksize": job["blksize"], "windowsize": job["windowsize"], "retries": 12}
        began = time.monotonic()
        try:
            if job["kind"] == "get":
                local = out / f"{job['name']}.{job['n']}"
                result = await client.get(via, server, job["name"], str(local), **options)
                intact = local.read_bytes() == (Path(plan["root"]) / job["name"]).read_bytes()
            else:
                source = Path(plan["uploads"]) / job["name"]
                result = await client.put(via, server, str(source), job["name"], **options)
                intact = True  # the test compares what landed in the root
        except Exception as e:
            return {**job, "ok": False, "error": repr(e), "seconds": time.monotonic() - began}
        return {
            **job,
            "ok": intact,
            "error": "" if intact else "content differs",
            "seconds": time.monotonic() - began,
            "retransmits": result.retransmits,
            "serverPort": result.server[1] if result.server else None,
        }

    results = await DeferredList(
        [Deferred.fromCoroutine(one(job)) for job in jobs], consumeErrors=True
    )
    return {
        "wall": time.monotonic() - started,
        "transfers": [value for _, value in results],
    }


if __name__ == "__main__":
    from tests.soak.driver import runWithPlan

    runWithPlan(run)

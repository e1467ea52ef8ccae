"""
#16 §5: the seeded fuzzer of L{tests.soak.fuzzer} against each running service (the
installed twistd on 127.0.0.1, on a port of its choosing; IPMsg, which broadcasts at
start, inside a network namespace of the test's own, with its fuzzer and good client):
afterwards no traceback in its log, a good client (the suite's own command line or
IPMsgPeer, or curl) is still served, its memory has not run away, and the services that
promise it answered no non-member more than it sent.

IPMsg cannot promise that: a 10-byte BR_ENTRY is rightly answered by an ANSENTRY of some
hundred bytes, and a minimal SENDMSG by a RECVMSG with our longer header. What it does
promise, per source, is a count of datagrams (L{tests.soak.fuzzer.ipmsgAnswersAllowed}):
none to what is not an IPMsg packet or asks for nothing, one answer to what asks for one,
and the packets it sends until acknowledged (the READMSG of a sealed message, the offer
of its shared files) at most C{attempts} times each.

CI fuzzes each service for 4 s; C{UDPSUITE_SOAK=full} for 60 s. C{UDPSUITE_FUZZ_SEED}
replays another seed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.soak import figures
from tests.soak.fuzzer import KINDS, PATTERN
from tests.soak.harness import DRIVER_ENV, drive, driverArgv, excerpts, sleep, tracebacks
from tests.tftp import lossnet
from twisted_udpsuite.ipmsg import IPMsgPeer

pytestmark = [pytest.mark.soak, pytest.mark.integration]

SEED = int(os.environ.get("UDPSUITE_FUZZ_SEED", "1616"))
SERVED = ["hello.bin", "sub/inner.txt", "big.bin"]


@dataclass
class Target:
    """
    One service to fuzz.

    @ivar options: its twistd subcommand and options (C{--port 0 --interface 127.0.0.1}
        are added).
    @ivar listening: what its "listening" log line says before the port (a regex).
    @ivar fuzzed: the fuzzer's services aimed at it, by the listening line they take
        the port from (C{files} and C{http} share one process).
    @ivar noAmplification: it promises that a non-member never gets more than it sent.
    @ivar namespace: it broadcasts, so it runs (and is fuzzed and served) only inside a
        network namespace of the test's own.
    @ivar answersAllowed: it promises each source at most the datagrams
        L{tests.soak.fuzzer.ipmsgAnswersAllowed} counts for what that source sent.
    @ivar settles: within seconds of the fuzz's end it holds no more files open than
        before it. Not TFTP: a transfer the fuzz began waits out the retransmission
        timeout it asked for (up to 255 s, RFC 2349) before it gives up.
    """

    options: list[str]
    fuzzed: dict[str, bytes]
    noAmplification: bool = False
    namespace: bool = False
    answersAllowed: bool = False
    settles: bool = True


TARGETS = {
    "tftp": Target(
        ["tftp", "--writable", "--root", "{root}"],
        {"tftp": rb"tftp listening on 127\.0\.0\.1:(\d+)"},
        settles=False,
    ),
    "echo": Target(["echo"], {"echo": rb"echo listening on 127\.0\.0\.1:(\d+) \(UDP\)"}, True),
    "chatroom": Target(
        ["chatroom", "--max-members", "5000"],
        {"chatroom": rb"chat room listening on 127\.0\.0\.1:(\d+)"},
        True,
    ),
    "responder": Target(
        ["responder", "--name", "fuzzed"],
        {"responder": rb"responder 'fuzzed' listening on 127\.0\.0\.1:(\d+)"},
        True,
    ),
    "files": Target(
        ["files", "--http-port", "0", "--root", "{root}"],
        {
            "files": rb"files listening on 127\.0\.0\.1:(\d+)",
            "http": rb"files-http listening on 127\.0\.0\.1:(\d+)",
        },
    ),
    "ipmsg": Target(
        ["ipmsg", "--nick", "box", "--share", "{root}", "--accept-files", "--root", "{inbox}"],
        {
            "ipmsg": rb"ipmsg listening on 127\.0\.0\.1:(\d+) \(UDP\)",
            "ipmsg-files": rb"ipmsg files listening on 127\.0\.0\.1:(\d+) \(TCP\)",
        },
        namespace=True,
        answersAllowed=True,
    ),
}
"""
The services fuzzed. IPMsg shares C{root} (to iptux's ASKSHARED, which is how its TCP
side gets offers to serve) and fetches what it is offered into C{inbox}: the good
client's gift, and what fuzz sources serve (L{tests.soak.fuzzer.FileSenders}).
"""

#: How often the IPMsg service sends what waits for an answer (the default it runs with).
IPMSG_ATTEMPTS = inspect.signature(IPMsgPeer).parameters["attempts"].default


class NotServed(Exception):
    """The good client failed (which service, its output)."""


async def servedWithin(
    reactor: Any, seconds: float, name: str, port: int, tmp_path: Path, root: Path,
    prefix: list[str],
) -> float:  # fmt: skip
    """
    Wait until a good client of C{name} is served; how long that took. Requests the fuzz
    left running (a TFTP transfer waits for an ACK that never comes) may hold the limits
    for a while; each ends in bounded time, so the wait is bounded too.
    """
    started = reactor.seconds()
    while True:
        try:
            await goodClient(reactor, name, port, tmp_path, root, prefix)
            return reactor.seconds() - started
        except NotServed:
            if reactor.seconds() - started > seconds:
                raise
            await sleep(reactor, 1)


async def goodClient(
    reactor: Any, name: str, port: int, tmp_path: Path, root: Path, prefix: list[str]
) -> None:
    """
    A well-behaved client of service C{name} is served (the assertion fails if not), run
    with C{prefix} (inside the service's namespace, if it has one).
    """
    cli = venvScript("udpsuite")
    where = f"127.0.0.1:{port}"
    got = tmp_path / f"good-{name}"
    env = None
    if name == "tftp":
        argv = [cli, "tftp", "get", "-q", where, "hello.bin", str(got)]
    elif name == "files":
        argv = [cli, "fetch", "-q", "-f", where, "hello.bin", str(got)]
    elif name == "http":
        argv = [requirePeer("curl"), "-sSf", "-o", str(got), f"http://{where}/hello.bin"]
    elif name == "echo":
        argv = [cli, "echo", "-q", "-c", "3", "-i", "0.1", where]
    elif name == "chatroom":
        argv = [cli, "send", "-w", "1", where, f"JOIN good{random.randrange(10**6)}"]
    elif name.startswith("ipmsg"):
        plan = {"target": ["127.0.0.1", port], "fetch": "hello.bin", "into": str(got),
                "give": str(tmp_path / GIFT)}  # fmt: skip
        (tmp_path / f"{name}-client.json").write_text(json.dumps(plan))
        argv = driverArgv([], "ipmsgclient", tmp_path / f"{name}-client.json")
        env = DRIVER_ENV
    else:
        argv = [cli, "discover", "--to", "127.0.0.1", "-p", str(port), "-t", "2"]
    out, err, code = await runProcess(reactor, [*prefix, *argv], env=env, timeout=60)
    if code != 0:
        raise NotServed(name, out, err)
    if name in ("tftp", "files", "http"):
        assert got.read_bytes() == (root / "hello.bin").read_bytes()
        got.unlink()
    elif name == "echo":
        assert b"3 probes sent, 3 received" in out, out
    elif name == "chatroom":
        assert b"OK JOINED good" in out, out
    elif name.startswith("ipmsg"):
        result = json.loads(out.splitlines()[-1])
        assert result["fetched"] == hashlib.sha256((root / "hello.bin").read_bytes()).hexdigest()
        assert result["given"] == 1, result
    else:
        assert b"fuzzed" in out, out


GIFT = "gift.bin"
"""The file the good IPMsg client offers the service (its drop box fetches it)."""


@pytest.mark.parametrize("service", list(TARGETS))
@pytest_twisted.ensureDeferred
async def test_fuzz(reactor: Any, tmp_path: Path, service: str) -> None:
    """
    Seconds of seeded random and mutated inputs: no traceback, a good client served after,
    memory bounded, no file descriptor left open, and for echo, the chat room and the
    responder no reply bytes to a non-member beyond what it sent; IPMsg answered no
    source beyond its promise (L{tests.soak.fuzzer.ipmsgAnswersAllowed}), and its inbox
    holds what it was sent whole and nothing else (L{checkInbox}).
    """
    target = TARGETS[service]
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rng = random.Random(SEED)
    (root / "hello.bin").write_bytes(rng.randbytes(3000))
    (root / "sub" / "inner.txt").write_bytes(b"inner\n" * 100)
    (root / "big.bin").write_bytes(rng.randbytes(200_000))
    (tmp_path / GIFT).write_bytes(rng.randbytes(5000))
    seconds = figures.seconds(4.0, 60.0)
    results = {}
    async with AsyncExitStack() as stack:
        prefix: list[str] = []
        if target.namespace:
            namespace = lossnet.namespace(reactor, tag=f"fuzz{service}")
            prefix = await stack.enter_async_context(namespace)
        argv = [*prefix, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "--drain", "2"]
        argv += [option.format(root=root, inbox=inbox) for option in target.options]
        argv += ["--port", "0", "--interface", "127.0.0.1"]
        server = BackgroundProcess(reactor, argv)
        try:
            ports = {
                name: int((await server.waitFor(pattern)).group(1))
                for name, pattern in target.fuzzed.items()
            }
            for name, port in ports.items():
                await goodClient(reactor, name, port, tmp_path, root, prefix)
            before = figures.rss(server.pid)
            fdsBefore = figures.openFiles(server.pid)
            for name, port in ports.items():
                plan = {
                    "service": name,
                    "target": ["127.0.0.1", port],
                    "names": SERVED,
                    "seconds": seconds,
                    "seed": SEED,
                    "sources": 1000,
                    "rate": 3000,
                }
                if target.answersAllowed:
                    plan["attempts"] = IPMSG_ATTEMPTS
                    plan["fileSenders"] = 300
                results[name] = await drive(
                    reactor, prefix, "fuzzer", plan, tmp_path / f"{name}.json", seconds + 60
                )
            waits = {
                name: await servedWithin(reactor, 90, name, port, tmp_path, root, prefix)
                for name, port in ports.items()
            }
            after = figures.rss(server.pid)
            fdsAfter = await settledFiles(reactor, server.pid, len(fdsBefore))
        finally:
            await server.stop()
            (tmp_path / "server.log").write_bytes(server.output)  # for a look after a failure
    assert not tracebacks(server.output), excerpts(server.output)
    # A bound on growth, not a measure: the fuzzed state (members, buckets, sessions
    # dallying) is all bounded by the services' limits; a leak per input would pass it.
    assert after["rss"] - before["rss"] < 48 * 1024, (before, after)
    if target.settles:
        assert len(fdsAfter) <= len(fdsBefore), (fdsBefore, fdsAfter)  # none leaked
    if target.answersAllowed:  # IPMsg: its share untouched, its inbox as sent
        shared = sorted(p.relative_to(root) for p in root.rglob("*"))
        assert shared == sorted([Path("sub"), *map(Path, SERVED)]), shared
        parts = checkInbox(inbox, (tmp_path / GIFT).read_bytes(), results)
    for name, result in results.items():
        if target.noAmplification:
            assert result["nonMemberBytesReceived"] <= result["nonMemberBytesSent"], result
        ipmsg = {}
        if target.answersAllowed and name in KINDS:  # the UDP side
            beyond = result["sourcesAnsweredBeyondPromise"]
            assert beyond == [], f"(source, datagrams it got, promised): {beyond}"
            ipmsg = {
                "datagramsReceived": result["datagramsReceived"],
                "largestReceived": result["largestReceived"],
                "sourcesGettingMoreBytes": result["sourcesGettingMoreBytes"],
                "filesFetchedFrom": result["fileSenders"]["answered"],
                "partFilesLeft": parts,
            }
        figures.record(
            f"fuzz-{name}",
            seed=SEED,
            seconds=seconds,
            inputs=result["inputs"],
            bytesSent=result["bytesSent"],
            bytesReceived=result["bytesReceived"],
            connections=result.get("connections"),
            servedAgainAfter=round(waits[name], 1),
            rssBeforeKiB=before["rss"],
            rssAfterKiB=after["rss"],
            rssPeakKiB=after["peak"],
            openFilesBefore=len(fdsBefore),
            openFilesAfter=len(fdsAfter),
            **ipmsg,
        )


async def settledFiles(reactor: Any, pid: int, wanted: int) -> dict[str, str]:
    """
    The open files of process C{pid} once they are down to C{wanted} (connections the
    fuzz left are closing), or after 10 s.
    """
    for _ in range(50):
        found = figures.openFiles(pid)
        if len(found) <= wanted:
            break
        await sleep(reactor, 0.2)
    return found


def checkInbox(inbox: Path, gift: bytes, results: dict[str, Any]) -> int:
    """
    What the IPMsg drop box fetched during the fuzz: each file it published is a gift of
    the good client, an empty file offered as empty, or a file a fuzz source sent whole
    (its bytes the L{PATTERN}, its size one sent whole), and every file sent whole was
    published; the part files kept for a resume hold nothing but the pattern. How many
    part files it left.
    """
    senders = results.get("ipmsg", {}).get("fileSenders", {})
    whole = set(senders.get("wholeSizes", []))
    parts = published = 0
    for received in inbox.iterdir():
        data = received.read_bytes()
        if received.name.startswith("."):
            assert received.name.endswith(".part") and data == PATTERN[: len(data)], received
            parts += 1
        elif data and data != gift:  # an empty file offered takes no fetch
            assert data == PATTERN[: len(data)] and len(data) in whole, received
            published += 1
    # Each file sent whole is published (and nothing else): none is lost.
    assert published == senders.get("answered", {}).get("whole", 0), (published, senders)
    return parts


def test_everyServiceIsFuzzed() -> None:
    """The fuzzer knows each target's inputs, and each service of the suite is a target."""
    from tests.soak.fuzzer import CORPORA
    from twisted_udpsuite import tap

    assert {n for t in TARGETS.values() for n in t.fuzzed} <= set(CORPORA)
    served = {spec.name for spec in tap.SERVICES}
    assert served <= set(TARGETS), served - set(TARGETS)

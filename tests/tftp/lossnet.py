"""
Real loss for the TFTP ending tests: a network namespace of the test's own (named with the
process id and the tag C{end}) whose loopback drops what an nftables rule set says, with our
server (the installed twistd) running inside it.

Rules are written for the input hook: a packet dropped on output would fail the sender's
C{sendto()} with C{EPERM} instead of being lost.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript

PORT = 6969
"""The server's request port inside the namespace."""

RANDOM_LOSS = """
table inet udpsuite_end {{
    chain input {{
        type filter hook input priority 0;
        meta l4proto udp numgen random mod {every} == 0 drop
    }}
}}
"""
"""One UDP datagram in C{every} dropped at random, each way."""

_names = itertools.count()


@asynccontextmanager
async def namespace(
    reactor: Any, rules: str | None = None, tag: str = "end"
) -> AsyncIterator[list[str]]:
    """
    A fresh namespace (named with the process id and C{tag}) with its loopback up and
    C{rules} loaded (nft syntax); yields the command prefix that runs a program inside it
    (its last item is the namespace's name), and deletes it afterwards.
    """
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ip = requirePeer("ip")
    nft = requirePeer("nft")
    name = f"udpsuite-{tag}-{os.getpid()}-{next(_names)}"
    out, err, code = await runProcess(reactor, [ip, "netns", "add", name])
    if code != 0:
        pytest.skip(f"cannot create a network namespace: {err.decode(errors='replace')}")
    prefix = [ip, "netns", "exec", name]
    try:
        out, err, code = await runProcess(reactor, [ip, "-n", name, "link", "set", "lo", "up"])
        assert code == 0, err
        if rules is not None:
            out, err, code = await runProcess(
                reactor, [*prefix, nft, "-f", "-"], stdin=rules.encode()
            )
            assert code == 0, err
        yield prefix
    finally:
        await runProcess(reactor, [ip, "netns", "delete", name])


@asynccontextmanager
async def server(
    reactor: Any, prefix: list[str], root: Path, *options: str
) -> AsyncIterator[BackgroundProcess]:
    """Our TFTP server on 127.0.0.1:L{PORT} in the namespace, serving C{root}."""
    argv = [*prefix, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp"]
    argv += ["--port", str(PORT), "--interface", "127.0.0.1", "--root", str(root), *options]
    process = BackgroundProcess(reactor, argv)
    try:
        await process.waitFor(b"tftp listening")
        yield process
    finally:
        await process.stop()


def servedFile(tmp_path: Path, name: str, size: int) -> tuple[Path, bytes]:
    """A root (C{tmp_path/root}) holding C{name}: C{size} random bytes; returns both."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    data = os.urandom(size)
    (root / name).write_bytes(data)
    return root, data


def url(name: str) -> str:
    """The URL of C{name} on the namespace's server."""
    return f"tftp://127.0.0.1:{PORT}/{name}"

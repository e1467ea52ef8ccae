"""The TFTP service and its twistd options."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite import tap
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import client, errors
from twisted_udpsuite.tftp.tap import Options, makeService


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    options = _parse()
    assert options["port"] == 6969
    assert options["workers"] == 1
    assert options["root"] == FilePath(str(tmp_path))
    backend = options.backend()
    assert not backend.writable
    policy = options.policy()
    assert policy.limits.maxBlksize == 65464 and policy.rollover == 0


def test_workersAuto(tmp_path: Any, monkeypatch: Any) -> None:
    """--workers auto: one process per CPU (the production setting), within the bounds."""
    for cpus, expected in [(2, 2), (None, 1), (500, 64)]:
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        assert _parse("--root", str(tmp_path), "--workers", "auto")["workers"] == expected


def test_everyLimit(tmp_path: Any) -> None:
    options = _parse(
        "--root", str(tmp_path), "--writable", "--allow-overwrite", "--no-create",
        "--max-blksize", "1468", "--max-windowsize", "8", "--max-upload-size", "1000",
        "--max-transfers", "3", "--max-transfers-per-client", "2", "--rate", "0",
        "--retries", "7", "--timeout", "2.5", "--rollover", "1", "--interface", "::",
    )  # fmt: skip
    backend, policy = options.backend(), options.policy()
    assert backend.writable and backend.allowOverwrite and not backend.allowCreate
    assert backend.maxUploadSize == policy.limits.maxUploadSize == 1000
    assert (policy.limits.maxBlksize, policy.limits.maxWindowsize) == (1468, 8)
    assert (policy.maxTransfers, policy.maxTransfersPerClient, policy.rate) == (3, 2, None)
    assert (policy.retries, policy.timeout, policy.rollover) == (7, 2.5, 1)
    assert options["interface"] == "::"


@pytest.mark.parametrize(
    "argv",
    [
        ["--root", "/nonexistent/dir"],
        ["--max-blksize", "7"],
        ["--max-blksize", "65465"],
        ["--rollover", "2"],
        ["--timeout", "abc"],
        ["--rate", "-1"],
        ["--max-transfers", "0"],
        ["--no-create"],
        ["--workers", "0"],
        ["--workers", "65"],
        ["--workers", "3", "--max-transfers", "2"],
    ],
)
def test_badOptions(argv: list[str]) -> None:
    with pytest.raises(usage.UsageError):
        _parse(*argv)


def test_registeredInTap() -> None:
    assert "tftp" in [spec.name for spec in tap.SERVICES]


@pytest.mark.parametrize(
    ("interface", "serverAddress", "clientAddress"),
    [
        ("", "192.0.2.1", "192.0.2.2"),
        ("::", "2001:db8::1", "2001:db8::2"),
        ("::", "192.0.2.1", "192.0.2.2"),  # IPv4 client on a dual-stack socket
    ],
)
def test_serviceTransfers(
    tmp_path: Any, interface: str, serverAddress: str, clientAddress: str
) -> None:
    (tmp_path / "f").write_bytes(b"data" * 1000)
    net = MemoryNetwork(seed=1, loss=0.1)
    serverHost = net.addHost("192.0.2.1/24", "2001:db8::1/64")
    clientHost = net.addHost("192.0.2.2/24", "2001:db8::2/64")
    options = _parse("--root", str(tmp_path), "--port", "69", "--interface", interface,
                     "--writable")  # fmt: skip
    service = makeService(options, serverHost)
    service.startService()
    sink = io.BytesIO()
    net.runUntil(client.get(clientHost, (serverAddress, 69), "f", sink, blksize=1024))
    assert sink.getvalue() == b"data" * 1000
    net.runUntil(client.put(clientHost, (serverAddress, 69), b"up", "u"))
    assert (tmp_path / "u").read_bytes() == b"up"
    with pytest.raises(errors.FileExists):
        net.runUntil(client.put(clientHost, (serverAddress, 69), b"up", "u"))
    net.advance(60)
    service.stopService()
    assert net.clock.getDelayedCalls() == []
    assert [p for p in serverHost.sockets if p.listening] == []

"""
Metrics (issue #11 §3): counting from TFTP log events and from the other services' live
counters, in memory; the text format as C{prometheus_client}'s parser reads it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath

from twisted_udpsuite import tap
from twisted_udpsuite.chat.service import ChatRoomService
from twisted_udpsuite.discovery.protocol import newInstance
from twisted_udpsuite.discovery.service import ResponderService
from twisted_udpsuite.discovery.wire import Kind, Message
from twisted_udpsuite.echo.service import EchoService
from twisted_udpsuite.files.service import FileService
from twisted_udpsuite.metrics import LIVE_METRICS, MetricsService, SuiteMetrics
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import client
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol


def scrape(metrics: SuiteMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, parsed back by prometheus_client's parser."""
    text = generate_latest(metrics.registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: SuiteMetrics, name: str, **labels: str) -> float | None:
    return scrape(metrics).get((name, tuple(sorted(labels.items()))))


def ended(outcome: str, direction: str = "RRQ", **fields: Any) -> dict[str, Any]:
    event = {
        "tftpTransfer": True,
        "direction": direction,
        "outcome": outcome,
        "bytes": 1000,
        "duration": 0.2,
        "retransmits": 1,
        "error": "",
    }
    event.update(fields)
    return event


def started(direction: str = "RRQ", **fields: Any) -> dict[str, Any]:
    return {"tftpTransferStarted": True, "direction": direction, **fields}


# TFTP, from events


def test_transferEventsCounted() -> None:
    """
    Each ended transfer counts once by direction and outcome, with its bytes (sent for a
    download, received for an upload), retransmits and duration; the gauge follows
    starts and ends.
    """
    metrics = SuiteMetrics()
    for _ in range(3):
        metrics(started())
    metrics(started("WRQ"))
    assert value(metrics, "udpsuite_tftp_active_transfers") == 4
    metrics(ended("completed"))
    metrics(ended("completed-unconfirmed"))
    metrics(ended("cut", reason="Server is stopping"))
    metrics(ended("completed", "WRQ", bytes=77))
    assert value(metrics, "udpsuite_tftp_active_transfers") == 0
    assert value(metrics, "udpsuite_tftp_transfers_started_total", direction="download") == 3
    assert value(metrics, "udpsuite_tftp_transfers_started_total", direction="upload") == 1
    for outcome in ("completed", "completed-unconfirmed", "cut"):
        assert (
            value(metrics, "udpsuite_tftp_transfers_total", direction="download", outcome=outcome)
            == 1
        )
    assert value(metrics, "udpsuite_tftp_sent_bytes_total") == 3000
    assert value(metrics, "udpsuite_tftp_received_bytes_total") == 77
    assert value(metrics, "udpsuite_tftp_retransmits_total", direction="download") == 3
    assert value(metrics, "udpsuite_tftp_transfer_duration_seconds_count", direction="upload") == 1
    assert (
        value(
            metrics, "udpsuite_tftp_transfer_duration_seconds_bucket", direction="upload", le="0.1"
        )
        == 0
    )
    assert (
        value(
            metrics, "udpsuite_tftp_transfer_duration_seconds_bucket", direction="upload", le="0.25"
        )
        == 1
    )
    assert (
        value(
            metrics,
            "udpsuite_tftp_transfer_failures_total",
            direction="download",
            reason="Server is stopping",
        )
        == 1
    )


@pytest.mark.parametrize(
    ("logged", "counted"),
    [
        ("ok", "completed"),
        ("aborted after OACK", "aborted-after-oack"),
        ("aborted", "cut"),
        ("refused", "failed"),
        ("aborted-after-oack", "aborted-after-oack"),
        ("something new", "other"),
    ],
)
def test_outcomeNames(logged: str, counted: str) -> None:
    """Today's outcome names map onto the contract's; an unknown one counts as C{other}."""
    metrics = SuiteMetrics()
    metrics(ended(logged))
    assert value(metrics, "udpsuite_tftp_transfers_total", direction="download", outcome=counted)


def test_failureReasonsBounded() -> None:
    """
    A failure's reason (from the event's C{reason}, or its C{error} text) is a label with
    numbers folded, and at most 32 different ones: peers choose ERROR texts.
    """
    metrics = SuiteMetrics()
    metrics(ended("failed", error=": Timed out after 12 resends"))
    for i in range(100):
        metrics(ended("failed", reason=f"peer says {'x' * i}"))
    samples = [key for key in scrape(metrics) if key[0] == "udpsuite_tftp_transfer_failures_total"]
    reasons = {dict(labels)["reason"] for _, labels in samples}
    assert "Timed out after N resends" in reasons
    assert "other" in reasons
    assert len(reasons) == 33


def test_refusalsAndDeadWorker() -> None:
    """
    Refused requests count by limit; a worker that dies takes the transfers it was
    running off the gauge (their end events will never come), and only its own.
    """
    metrics = SuiteMetrics()
    for limit in ("rate", "rate", "max-transfers", "stopping"):
        metrics({"tftpRefused": limit, "log_format": "refusing"})
    assert value(metrics, "udpsuite_tftp_requests_refused_total", limit="rate") == 2
    assert value(metrics, "udpsuite_tftp_requests_refused_total", limit="stopping") == 1
    metrics(started(tftpWorkerPid=101))
    metrics(started(tftpWorkerPid=101))
    metrics(started(tftpWorkerPid=102))
    metrics(started())
    metrics({"tftpWorkerEnded": True, "tftpWorkerPid": 101})
    assert value(metrics, "udpsuite_tftp_active_transfers") == 2
    # An end event from a process whose starts were all accounted for never goes below 0.
    metrics(ended("completed", tftpWorkerPid=101))
    assert value(metrics, "udpsuite_tftp_active_transfers") == 2


def test_otherEventsIgnored() -> None:
    """Events that are not TFTP's leave every metric as it was."""
    metrics = SuiteMetrics()
    before = scrape(metrics)
    metrics({"log_format": "echoed datagram", "bytes": 5, "outcome": "ok"})
    metrics({"service": "files", "filesRequest": True, "outcome": "ok"})
    assert scrape(metrics) == before


def test_ownRegistry() -> None:
    """Two suites in one process keep their own counts (no global default registry)."""
    first, second = SuiteMetrics(), SuiteMetrics()
    first(ended("completed"))
    assert value(first, "udpsuite_tftp_transfers_total", direction="download", outcome="completed")
    assert (
        value(second, "udpsuite_tftp_transfers_total", direction="download", outcome="completed")
        is None
    )


@pytest.fixture
def observed() -> Iterator[SuiteMetrics]:
    """Metrics fed by the global log publisher, as under twistd."""
    metrics = SuiteMetrics()
    globalLogPublisher.addObserver(metrics)
    try:
        yield metrics
    finally:
        globalLogPublisher.removeObserver(metrics)


def test_realServerTransfers(tmp_path: Any, observed: SuiteMetrics) -> None:
    """
    The in-memory TFTP server's own events: a download, an upload, a missing file and a
    request over the per-client limit, counted as such.
    """
    root = FilePath(str(tmp_path))
    data = os.urandom(5000)
    root.child("f").setContent(data)
    net = MemoryNetwork()
    serverHost = net.addHost("192.0.2.1/24")
    clientHost = net.addHost("192.0.2.2/24")
    protocol = TFTPServerProtocol(
        FilesystemBackend(root, writable=True),
        ServerPolicy(rate=None, maxTransfersPerClient=1),
        reactor=serverHost,
    )
    port = serverHost.listenUDP(69, protocol, maxPacketSize=65536)
    server = ("192.0.2.1", 69)
    sink = io.BytesIO()
    net.runUntil(client.get(clientHost, server, "f", sink))
    net.runUntil(client.put(clientHost, server, b"x" * 700, "up"))
    with pytest.raises(Exception, match="not found|File"):
        net.runUntil(client.get(clientHost, server, "missing", io.BytesIO()))
    # Two at once from one client: the second is refused by the per-client limit.
    first = client.get(clientHost, server, "f", io.BytesIO())
    second = client.get(clientHost, server, "f", io.BytesIO())
    net.runUntil(first)
    with pytest.raises(Exception, match="Too many"):
        net.runUntil(second)
    net.advance(400)
    port.stopListening()
    assert net.clock.getDelayedCalls() == []

    got = scrape(observed)
    assert got[("udpsuite_tftp_transfers_started_total", (("direction", "download"),))] == 3
    assert got[("udpsuite_tftp_transfers_started_total", (("direction", "upload"),))] == 1
    done = ("direction", "download"), ("outcome", "completed")
    assert got[("udpsuite_tftp_transfers_total", done)] == 2
    failed = ("direction", "download"), ("outcome", "failed")
    assert got[("udpsuite_tftp_transfers_total", failed)] == 1
    assert got[("udpsuite_tftp_sent_bytes_total", ())] == 2 * len(data)
    assert got[("udpsuite_tftp_received_bytes_total", ())] == 700
    assert got[("udpsuite_tftp_active_transfers", ())] == 0
    refused = (("limit", "max-transfers-per-client"),)
    assert got[("udpsuite_tftp_requests_refused_total", refused)] == 1


# The other services, read at scrape time


def test_liveServices(tmp_path: Any) -> None:
    """
    Echo, chat room, responder and file server counters as a scrape sees them, from
    services driven in memory; a service kind that is not watched adds no samples.
    """
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    peer = net.addHost("192.0.2.2/24")
    metrics = SuiteMetrics()

    echo = EchoService(port=7007, reactor=host)
    room = ChatRoomService(port=9999, reactor=host)
    responder = ResponderService("box", port=9998, reactor=host)
    files = FileService(FilePath(str(tmp_path)), port=8000, reactor=host)
    for kind, service in [
        ("echo", echo),
        ("chatroom", room),
        ("responder", responder),
        ("files", files),
        ("tftp", object()),
    ]:
        metrics.watch(kind, service)
    echo.startService()
    room.startService()
    responder.startService()

    got: list[bytes] = []  # what the peer heard back

    class Peer(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: Any) -> None:
            got.append(data)

    sock = peer.listenUDP(40000, Peer())
    for _ in range(3):
        sock.write(b"hello", ("192.0.2.1", 7007))
    sock.write(b"x", ("192.0.2.1", 7007))
    peer.listenUDP(53, Peer()).write(b"loop", ("192.0.2.1", 7007))
    sock.write(b"JOIN alice\n", ("192.0.2.1", 9999))
    sock.write(b"MSG hi\n", ("192.0.2.1", 9999))
    sock.write(b"RESEND 1 2\n", ("192.0.2.1", 9999))
    sock.write(
        Message(Kind.PROBE, newInstance(), 1, maxDelay=0.1, padTo=256).toBytes(),
        ("192.0.2.1", 9998),
    )
    sock.write(b"garbage", ("192.0.2.1", 9998))
    net.advance(5)

    proto = files.factory.buildProtocol(IPv4Address("TCP", "192.0.2.2", 5000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.2", 5000))
    proto.makeConnection(transport)
    tmp_path.joinpath("f").write_bytes(b"abc")
    proto.dataReceived(b"FETCH 0 - f\nFETCH 0 - nothing\n")
    net.advance(1)

    samples = scrape(metrics)
    assert samples[("udpsuite_echo_datagrams_total", ())] == 4
    assert samples[("udpsuite_echo_bytes_total", ())] == 16
    assert samples[("udpsuite_echo_refused_total", (("reason", "source-port"),))] == 1
    assert samples[("udpsuite_echo_tcp_open_connections", ())] == 0
    assert samples[("udpsuite_chatroom_members", ())] == 1
    assert samples[("udpsuite_chatroom_lines_relayed_total", ())] == 2
    assert samples[("udpsuite_chatroom_resend_requests_total", ())] == 1
    assert samples[("udpsuite_chatroom_lines_resent_total", ())] == 2
    assert samples[("udpsuite_responder_probes_total", ())] == 1
    assert samples[("udpsuite_responder_answered_total", ())] == 1
    assert samples[("udpsuite_responder_suppressed_total", (("reason", "malformed"),))] == 1
    ok = ("outcome", "ok"), ("protocol", "files"), ("status", "200")
    missing = ("outcome", "error"), ("protocol", "files"), ("status", "404")
    assert samples[("udpsuite_files_requests_total", ok)] == 1
    assert samples[("udpsuite_files_requests_total", missing)] == 1
    assert samples[("udpsuite_files_sent_bytes_total", (("protocol", "files"),))] == 3
    assert samples[("udpsuite_files_open_connections", (("protocol", "files"),))] == 1
    # Every documented live metric is exposed, even before it has a value.
    names = {
        family.name
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    assert set(LIVE_METRICS) <= names

    proto.connectionLost(None)  # type: ignore[arg-type]
    room.stopService()
    responder.stopService()
    echo.stopService()
    net.advance(100)
    assert net.clock.getDelayedCalls() == []


# Options and wiring


def test_optionsDefaults() -> None:
    """Metrics are off by default, loopback when on; drain defaults to 10 s."""
    options = tap.Options()
    options.parseOptions([])
    assert options["metrics-port"] is None
    assert options["metrics-interface"] == "127.0.0.1"
    assert options["drain"] == 10.0
    service = tap.makeService(options, MemoryNetwork().addHost("192.0.2.1/24"))
    assert not any(isinstance(child, MetricsService) for child in service)


@pytest.mark.parametrize(
    "argv",
    [
        ["--metrics-port", "http"],
        ["--metrics-port", "70000"],
        ["--metrics-interface", "localhost"],
        ["--drain", "-1"],
        ["--drain", "soon"],
    ],
)
def test_badOptions(argv: list[str], capsys: Any) -> None:
    """A bad value is one line on stderr and exit status 2."""
    with pytest.raises(SystemExit) as e:
        tap.Options().parseOptions(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and argv[0] in err


def test_metricsServiceWatchesEveryService(tmp_path: Any) -> None:
    """With --metrics-port, the tap adds one metrics service that watches the others."""
    options = tap.Options()
    options.parseOptions(["--metrics-port", "9100", "--drain", "3", "echo"])
    host = MemoryNetwork().addHost("192.0.2.1/24")
    top = tap.makeService(options, host)
    (metricsService,) = [child for child in top if isinstance(child, MetricsService)]
    assert (metricsService.port, metricsService.interface) == (9100, "127.0.0.1")
    assert [kind for kind, _ in metricsService.metrics._live.watched] == ["echo"]
    assert top.drainTimeout == 3

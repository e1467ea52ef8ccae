# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics for the suite's services (C{twistd -n udpsuite --metrics-port P}).

Two sources feed one registry of our own (never C{prometheus_client}'s global one, so
several suites in one process, library users and tests stay apart):

  - TFTP is counted from its log events (L{SuiteMetrics.observe}, a log observer): the
    one event per ended transfer (fields C{tftpTransfer}, C{direction}, C{outcome},
    C{bytes}, C{duration}, C{retransmits}, C{reason}), a field-only event when a transfer
    starts (C{tftpTransferStarted}) and the C{tftpRefused} field of a refused request.
    With C{--workers N} every worker's events are relayed into the parent's log
    (L{twisted_udpsuite.tftp.workerpool}), so the parent's scrape counts the whole server;
    a worker that dies takes its running transfers off the gauge (C{tftpWorkerEnded}).
  - The other services keep counters anyway (L{EchoStats}, the responder's stats, the
    room's sequence number, the file factory's counts): L{SuiteMetrics.watch} registers
    the object and a collector reads it when Prometheus scrapes, so the echo's per-datagram
    hot path does no extra work at all.

C{prometheus_client.twisted.MetricsResource} answers scrapes from the reactor's thread
pool, so the collector reads live state from another thread: it only reads numbers and
takes C{dict} copies (single C-level operations under the GIL), never iterates a
container the reactor may be changing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from zope.interface import implementer

from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import Listener, ListeningService

__all__ = [
    "DURATION_BUCKETS",
    "LIVE_METRICS",
    "OUTCOMES",
    "MetricsService",
    "SuiteMetrics",
    "metricsSite",
]

OUTCOMES = ("completed", "completed-unconfirmed", "failed", "aborted-after-oack", "cut")
"""A TFTP transfer's outcomes, as the transfer-end log event names them."""

#: Older names of the same outcomes (before the contract's names), still understood.
_OUTCOME_ALIASES = {
    "ok": "completed",
    "aborted after OACK": "aborted-after-oack",
    "aborted": "cut",
    "refused": "failed",
}

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
"""Transfer duration histogram buckets (s): a PXE kernel in 0.1 s to a slow image in 30 min."""

#: Failure reasons kept as label values; past this many, new ones count as "other"
#: (a reason's text comes from peers' ERROR packets, so it must not grow without bound).
_MAX_REASONS = 32
_REASON_LENGTH = 48

LIVE_METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "udpsuite_echo_datagrams": ("counter", "UDP datagrams echoed.", ()),
    "udpsuite_echo_bytes": (
        "counter",
        "Bytes echoed (UDP at once, TCP when its connection closes).",
        (),
    ),
    "udpsuite_echo_refused": ("counter", "UDP datagrams not echoed, by rule.", ("reason",)),
    "udpsuite_echo_tcp_connections": ("counter", "TCP echo connections accepted.", ()),
    "udpsuite_echo_tcp_open_connections": ("gauge", "TCP echo connections open now.", ()),
    "udpsuite_chatroom_members": ("gauge", "Members of the chat room now.", ()),
    "udpsuite_chatroom_lines_relayed": (
        "counter",
        "Lines relayed by the chat room (messages and room events).",
        (),
    ),
    "udpsuite_chatroom_resend_requests": ("counter", "RESEND requests answered.", ()),
    "udpsuite_chatroom_lines_resent": ("counter", "Lines sent again for RESEND requests.", ()),
    "udpsuite_responder_probes": ("counter", "Discovery probes received.", ()),
    "udpsuite_responder_answered": ("counter", "Discovery probes answered.", ()),
    "udpsuite_responder_suppressed": (
        "counter",
        "Discovery datagrams not answered, by reason.",
        ("reason",),
    ),
    "udpsuite_files_requests": (
        "counter",
        "File server requests answered, by protocol, status code and outcome.",
        ("protocol", "status", "outcome"),
    ),
    "udpsuite_files_sent_bytes": ("counter", "File server body bytes sent.", ("protocol",)),
    "udpsuite_files_open_connections": (
        "gauge",
        "File server connections open now.",
        ("protocol",),
    ),
    "udpsuite_files_refused_connections": (
        "counter",
        "File server connections refused, by limit.",
        ("limit",),
    ),
    "udpsuite_ipmsg_peers": ("gauge", "IP Messenger peers in the table now.", ()),
    "udpsuite_ipmsg_messages": (
        "counter",
        "IP Messenger messages, by direction (in: shown once; out: sent).",
        ("direction",),
    ),
    "udpsuite_ipmsg_unacknowledged": ("counter", "Messages sent that were never acked.", ()),
    "udpsuite_ipmsg_dropped": (
        "counter",
        "IP Messenger datagrams dropped, by reason.",
        ("reason",),
    ),
    "udpsuite_ipmsg_files": (
        "counter",
        "IP Messenger files transferred whole, by direction (sent, received).",
        ("direction",),
    ),
}
"""The metrics read from live state at scrape time: name -> (type, help, label names)."""

Sample = tuple[str, tuple[str, ...], float]


def _echoSamples(service: Any) -> Iterator[Sample]:
    stats = service.stats
    yield "udpsuite_echo_datagrams", (), stats.echoed
    yield "udpsuite_echo_bytes", (), stats.bytes
    for reason, count in dict(stats.dropped).items():
        yield "udpsuite_echo_refused", (reason,), count
    yield "udpsuite_echo_tcp_connections", (), stats.connections
    factory = getattr(service, "tcpFactory", None)
    if factory is not None:
        yield "udpsuite_echo_tcp_open_connections", (), sum(dict(factory.limits.open).values())


def _chatroomSamples(service: Any) -> Iterator[Sample]:
    room = service.room
    yield "udpsuite_chatroom_members", (), len(room.members)
    yield "udpsuite_chatroom_lines_relayed", (), room.lastSeq
    yield "udpsuite_chatroom_resend_requests", (), room.resendRequests
    yield "udpsuite_chatroom_lines_resent", (), room.linesResent


def _responderSamples(service: Any) -> Iterator[Sample]:
    stats = service.responder.stats
    yield "udpsuite_responder_probes", (), stats.probes
    yield "udpsuite_responder_answered", (), stats.answered
    for reason, count in dict(stats.dropped).items():
        yield "udpsuite_responder_suppressed", (reason,), count


def _filesSamples(service: Any) -> Iterator[Sample]:
    sides = (
        ("files", service.factory.counts),
        ("http", service.httpCounts),
        ("plain", getattr(service, "plainCounts", None)),
    )
    for protocol, counts in sides:
        if counts is None:
            continue
        for (status, outcome), count in dict(counts.requests).items():
            yield "udpsuite_files_requests", (protocol, str(status), outcome), count
        yield "udpsuite_files_sent_bytes", (protocol,), counts.bytesSent
        yield "udpsuite_files_open_connections", (protocol,), counts.openConnections()
        for limit, count in dict(counts.refused).items():
            yield "udpsuite_files_refused_connections", (limit,), count


def _ipmsgSamples(service: Any) -> Iterator[Sample]:
    stats = service.peer.stats
    yield "udpsuite_ipmsg_peers", (), len(service.peer.peers)
    yield "udpsuite_ipmsg_messages", ("in",), stats.messagesIn
    yield "udpsuite_ipmsg_messages", ("out",), stats.messagesOut
    yield "udpsuite_ipmsg_unacknowledged", (), stats.unacknowledged
    for reason, count in dict(stats.dropped).items():
        yield "udpsuite_ipmsg_dropped", (reason,), count
    yield "udpsuite_ipmsg_files", ("sent",), service.files.stats.served
    yield "udpsuite_ipmsg_files", ("received",), len(service.dropBox.received)


_SAMPLERS: dict[str, Callable[[Any], Iterable[Sample]]] = {
    "echo": _echoSamples,
    "chatroom": _chatroomSamples,
    "responder": _responderSamples,
    "files": _filesSamples,
    "ipmsg": _ipmsgSamples,
}


class _LiveCollector(Collector):
    """Reads the watched services' own counters at scrape time (summed per metric)."""

    def __init__(self) -> None:
        self.watched: list[tuple[str, Any]] = []

    def collect(self) -> Iterable[Metric]:
        totals: dict[str, dict[tuple[str, ...], float]] = {}
        for kind, service in list(self.watched):
            for name, labels, value in _SAMPLERS[kind](service):
                series = totals.setdefault(name, {})
                series[labels] = series.get(labels, 0) + value
        for name, (kind, documentation, labelNames) in LIVE_METRICS.items():
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, documentation, labels=labelNames)
            else:
                family = GaugeMetricFamily(name, documentation, labels=labelNames)
            for labels, value in sorted(totals.get(name, {}).items()):
                family.add_metric(list(labels), value)
            yield family


def _direction(event: dict[str, Any]) -> str:
    return "upload" if event.get("direction") == "WRQ" else "download"


@implementer(ILogObserver)
class SuiteMetrics:
    """
    The suite's metrics in one registry of their own.

    Add L{observe} to the log publisher the TFTP servers log to (the global one under
    twistd) and L{watch} every other service; serve L{registry} with L{metricsSite}.

    @ivar registry: what a scrape returns.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.tftpStarted = Counter(
            "udpsuite_tftp_transfers_started",
            "TFTP transfers started (requests accepted), by direction.",
            ["direction"],
            registry=r,
        )
        self.tftpEnded = Counter(
            "udpsuite_tftp_transfers",
            "TFTP transfers ended, by direction and outcome.",
            ["direction", "outcome"],
            registry=r,
        )
        self.tftpFailures = Counter(
            "udpsuite_tftp_transfer_failures",
            "Failed TFTP transfers, by direction and reason.",
            ["direction", "reason"],
            registry=r,
        )
        self.tftpSent = Counter(
            "udpsuite_tftp_sent_bytes", "TFTP data bytes sent (downloads).", registry=r
        )
        self.tftpReceived = Counter(
            "udpsuite_tftp_received_bytes", "TFTP data bytes received (uploads).", registry=r
        )
        self.tftpRetransmits = Counter(
            "udpsuite_tftp_retransmits",
            "TFTP packets sent again, by direction.",
            ["direction"],
            registry=r,
        )
        self.tftpDuration = Histogram(
            "udpsuite_tftp_transfer_duration_seconds",
            "TFTP transfer durations, by direction.",
            ["direction"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.tftpActive = Gauge(
            "udpsuite_tftp_active_transfers", "TFTP transfers running now.", registry=r
        )
        self.tftpRefused = Counter(
            "udpsuite_tftp_requests_refused",
            "TFTP requests refused, by the limit that refused them.",
            ["limit"],
            registry=r,
        )
        self._running: dict[Any, int] = {}  # running transfers per process (worker pid)
        self._reasons: set[str] = set()
        self._live = _LiveCollector()
        r.register(self._live)

    def watch(self, kind: str, service: Any) -> None:
        """
        Read C{service}'s counters at each scrape; C{kind} is its subcommand name
        (C{echo}, C{chatroom}, C{responder}, C{files}, C{ipmsg}). TFTP needs no watching (see
        L{observe}); other kinds are ignored.
        """
        if kind in _SAMPLERS:
            self._live.watched.append((kind, service))

    def __call__(self, event: dict[str, Any]) -> None:
        self.observe(event)

    def observe(self, event: dict[str, Any]) -> None:
        """Count what a TFTP log event says (any other event is ignored quickly)."""
        if event.get("tftpTransfer"):
            self._transferEnded(event)
        elif event.get("tftpTransferStarted"):
            process = event.get("tftpWorkerPid")
            self._running[process] = self._running.get(process, 0) + 1
            self.tftpActive.inc()
            self.tftpStarted.labels(_direction(event)).inc()
        elif "tftpRefused" in event:
            self.tftpRefused.labels(str(event["tftpRefused"])).inc()
        elif event.get("tftpWorkerEnded"):
            # Its running transfers will never log their end.
            self.tftpActive.dec(self._running.pop(event.get("tftpWorkerPid"), 0))

    def _transferEnded(self, event: dict[str, Any]) -> None:
        direction = _direction(event)
        outcome = str(event.get("outcome", ""))
        outcome = _OUTCOME_ALIASES.get(outcome, outcome)
        if outcome not in OUTCOMES:
            outcome = "other"
        process = event.get("tftpWorkerPid")
        running = self._running.get(process, 0)
        if running > 0:
            self._running[process] = running - 1
            self.tftpActive.dec()
        self.tftpEnded.labels(direction, outcome).inc()
        if outcome in ("failed", "cut"):
            self.tftpFailures.labels(direction, self._reason(event)).inc()
        size = _number(event.get("bytes"))
        (self.tftpReceived if direction == "upload" else self.tftpSent).inc(size)
        self.tftpRetransmits.labels(direction).inc(_number(event.get("retransmits")))
        self.tftpDuration.labels(direction).observe(_number(event.get("duration")))

    def _reason(self, event: dict[str, Any]) -> str:
        """A short, bounded label for why a transfer failed."""
        text = event.get("reason") or event.get("error") or ""
        text = re.sub(r"\d+", "N", str(text).lstrip(": ").strip())[:_REASON_LENGTH] or "unknown"
        if text not in self._reasons:
            if len(self._reasons) >= _MAX_REASONS:
                return "other"
            self._reasons.add(text)
        return text


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and value >= 0 else 0.0


def metricsSite(metrics: SuiteMetrics) -> Any:
    """A quiet C{twisted.web} site answering C{GET /metrics} (and C{/}) with the registry."""
    from prometheus_client.twisted import MetricsResource
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    resource = MetricsResource(metrics.registry)  # type: ignore[no-untyped-call]
    root = Resource()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", resource)
    root.putChild(b"", resource)
    site = Site(root)  # type: ignore[no-untyped-call]
    site.noisy = False
    return site


class MetricsService(ListeningService):
    """
    Serves a L{SuiteMetrics} over HTTP while running, and feeds it the log events.

    It binds like every suite port (L{ListeningService}: while privileged, or adopted
    from systemd as C{metrics}); starting raises
    L{twisted.internet.error.CannotListenError} if the port cannot be bound.

    @param publisher: where the TFTP events come from (the global log publisher).
    """

    def __init__(
        self,
        metrics: SuiteMetrics,
        port: int,
        interface: str = "127.0.0.1",
        reactor: IReactorNetwork | None = None,
        publisher: LogPublisher | None = None,
    ) -> None:
        self.metrics = metrics
        self.port = port
        self.interface = interface
        self._publisher = publisher if publisher is not None else globalLogPublisher
        site = metricsSite(self.metrics)
        super().__init__(
            [Listener("metrics", "tcp", port, site, interface, detail=", path /metrics")],
            reactorOr(reactor),
        )

    @property
    def listening(self) -> Any:
        """The HTTP port, once started."""
        return self.portOf(0)

    def startService(self) -> None:
        super().startService()
        self._publisher.addObserver(self.metrics)

    def stopService(self) -> Any:
        self._publisher.removeObserver(self.metrics)
        return super().stopService()

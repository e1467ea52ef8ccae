"""Shared pieces of the file-server tests: a server on a StringTransport, a response reader."""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath

from twisted_udpsuite.files.server import FileServerFactory, FileServerProtocol
from twisted_udpsuite.files.wire import (
    BodyData,
    ResponseEnd,
    ResponseHead,
    ResponseParser,
    Trailer,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serve(
    root: Any, host: str = "127.0.0.1", clock: Clock | None = None, **limits: Any
) -> tuple[Clock, FileServerFactory, FileServerProtocol, StringTransport]:
    """A server protocol connected to a StringTransport, on a Clock."""
    clock = clock if clock is not None else Clock()
    factory = FileServerFactory(FilePath(str(root)), reactor=clock, **limits)
    return (clock, factory, *connect(factory, host))  # type: ignore[return-value]


def connect(factory: FileServerFactory, host: str = "127.0.0.1", port: int = 5555) -> Any:
    addr = IPv4Address("TCP", host, port)
    proto = factory.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr, hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
    proto.makeConnection(transport)
    return proto, transport


def pumpBody(clock: Clock, transport: StringTransport, limit: int = 100000) -> None:
    """Let the body sender run until it has unregistered (whole body sent)."""
    for _ in range(limit):
        clock.advance(0)
        if transport.producer is None:
            return
    raise AssertionError("body never finished")


class Reader:
    """Parses what the server wrote into (head, body, trailer) triples."""

    def __init__(self, *fetches: bool) -> None:
        self.parser = ResponseParser()
        for isFetch in fetches:
            self.parser.expect(isFetch)
        self.responses: list[tuple[ResponseHead, bytes, Trailer | None]] = []
        self._head: ResponseHead | None = None
        self._body: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[ResponseHead, bytes, Trailer | None]]:
        for event in self.parser.feed(data):
            if isinstance(event, ResponseHead):
                self._head = event
                self._body = []
            elif isinstance(event, BodyData):
                self._body.append(event.data)
            elif isinstance(event, ResponseEnd):
                assert self._head is not None
                self.responses.append((self._head, b"".join(self._body), event.trailer))
        return self.responses

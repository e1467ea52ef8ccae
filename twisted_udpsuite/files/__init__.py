"""
TCP file serving: a framed protocol (pipelined FETCH/LIST/STAT, resumable downloads
checked by sha256), the socket tutorials' plain protocol, and a service that serves a
root over both and over HTTP.

The library's names are importable from here: the client functions (L{fetch},
L{fetchTo}, L{listDirectory}, L{stat}, L{fetchPlain}, L{fetchPlainTo}), their results
and errors, the server factories and the service.
"""

from twisted_udpsuite.files.client import (
    DigestMismatch,
    DirectoryEntry,
    FetchError,
    FetchResult,
    FileChanged,
    InsufficientSpace,
    ServerError,
    StatResult,
    TransferInterrupted,
    fetch,
    fetchTo,
    listDirectory,
    stat,
)
from twisted_udpsuite.files.counts import RequestCounts
from twisted_udpsuite.files.plain import (
    NothingReceived,
    PlainFileFactory,
    PlainFileProtocol,
    PlainResult,
    fetchPlain,
    fetchPlainTo,
)
from twisted_udpsuite.files.server import FileServerFactory, FileServerProtocol
from twisted_udpsuite.files.service import FileService

__all__ = [
    # The framed protocol's client: its functions, results and errors.
    "fetch",
    "fetchTo",
    "listDirectory",
    "stat",
    "FetchResult",
    "DirectoryEntry",
    "StatResult",
    "FetchError",
    "ServerError",
    "DigestMismatch",
    "FileChanged",
    "TransferInterrupted",
    "InsufficientSpace",
    # The plain protocol, both sides.
    "fetchPlain",
    "fetchPlainTo",
    "PlainResult",
    "NothingReceived",
    "PlainFileFactory",
    "PlainFileProtocol",
    # The framed server and the service.
    "FileServerFactory",
    "FileServerProtocol",
    "FileService",
    "RequestCounts",
]

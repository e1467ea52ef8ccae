"""
TFTP (RFC 1350, 2347, 2348, 2349, 7440): server and client.

The library's names, importable from here: the client functions L{get} and L{put}; the
server (L{TFTPService} with its L{ServerPolicy}, serving an L{IBackend} such as
L{FilesystemBackend}); the failures (L{TFTPError} and its subclasses, one per error code);
and what a transfer reports or is told. C{twistd -n udpsuite tftp} builds its service in
L{twisted_udpsuite.tftp.tap}.

The server's names are imported on first use, so that importing the client (as C{udpsuite
tftp get} does) does not load the server, its HTTP origin and its worker pool.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from twisted_udpsuite.tftp.client import ProgressCallback, TransferResult, get, put
from twisted_udpsuite.tftp.errors import (
    AccessViolation,
    DiskFull,
    FileExists,
    FileNotFound,
    IllegalOperation,
    NoSuchUser,
    OptionNegotiationRefused,
    ProtocolError,
    RemoteError,
    TFTPError,
    TransferTimeout,
    UnknownTransferID,
)
from twisted_udpsuite.tftp.options import ServerOptionLimits, TransferOptions
from twisted_udpsuite.tftp.trace import IWireTracer, PcapWriter, TracerGroup, logTracer
from twisted_udpsuite.tftp.transfer import EngineSettings, TransferStats

if TYPE_CHECKING:
    from twisted_udpsuite.tftp.backend import (
        CLIENT_ROOTS,
        FilesystemBackend,
        IBackend,
        IReader,
        IWriter,
        RemappingBackend,
    )
    from twisted_udpsuite.tftp.origin import HTTPOriginBackend, OriginCache
    from twisted_udpsuite.tftp.remap import RemapError, RemapRules
    from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol
    from twisted_udpsuite.tftp.service import InetdTFTPService, TFTPService
    from twisted_udpsuite.tftp.workerpool import MultiProcessTFTPService

#: The server's names and the module of each, imported on first use (PEP 562 C{__getattr__});
#: the same imports are written out under C{TYPE_CHECKING} above, for type checkers and the
#: API docs (C{tests/tftp/test_package.py} checks that the two agree).
_SERVER_SIDE = {
    "CLIENT_ROOTS": "backend",
    "FilesystemBackend": "backend",
    "IBackend": "backend",
    "IReader": "backend",
    "IWriter": "backend",
    "RemappingBackend": "backend",
    "HTTPOriginBackend": "origin",
    "OriginCache": "origin",
    "RemapError": "remap",
    "RemapRules": "remap",
    "ServerPolicy": "server",
    "TFTPServerProtocol": "server",
    "InetdTFTPService": "service",
    "TFTPService": "service",
    "MultiProcessTFTPService": "workerpool",
}


def __getattr__(name: str) -> Any:
    """A server-side name of L{_SERVER_SIDE}, imported from its module when first asked for."""
    module = _SERVER_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The package's names, those not imported yet too."""
    return sorted({*globals(), *__all__})


__all__ = [
    "CLIENT_ROOTS",
    "AccessViolation",
    "DiskFull",
    "EngineSettings",
    "FileExists",
    "FileNotFound",
    "FilesystemBackend",
    "HTTPOriginBackend",
    "IBackend",
    "IReader",
    "IWireTracer",
    "IWriter",
    "IllegalOperation",
    "InetdTFTPService",
    "MultiProcessTFTPService",
    "NoSuchUser",
    "OptionNegotiationRefused",
    "OriginCache",
    "PcapWriter",
    "ProgressCallback",
    "ProtocolError",
    "RemapError",
    "RemapRules",
    "RemoteError",
    "RemappingBackend",
    "ServerOptionLimits",
    "ServerPolicy",
    "TFTPError",
    "TFTPServerProtocol",
    "TFTPService",
    "TracerGroup",
    "TransferOptions",
    "TransferResult",
    "TransferStats",
    "TransferTimeout",
    "UnknownTransferID",
    "get",
    "logTracer",
    "put",
]

"""
TFTP (RFC 1350, 2347, 2348, 2349, 7440): server and client.

The library's names, importable from here: the client functions L{get} and L{put}; the
server (L{TFTPService} with its L{ServerPolicy}, serving an L{IBackend} such as
L{FilesystemBackend}); the failures (L{TFTPError} and its subclasses, one per error code);
and what a transfer reports or is told. C{twistd -n udpsuite tftp} builds its service in
L{twisted_udpsuite.tftp.tap}.
"""

from twisted_udpsuite.tftp.backend import (
    CLIENT_ROOTS,
    FilesystemBackend,
    IBackend,
    IReader,
    IWriter,
    RemappingBackend,
)
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
from twisted_udpsuite.tftp.origin import HTTPOriginBackend, OriginCache
from twisted_udpsuite.tftp.remap import RemapError, RemapRules
from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol
from twisted_udpsuite.tftp.service import InetdTFTPService, TFTPService
from twisted_udpsuite.tftp.trace import IWireTracer, PcapWriter, TracerGroup, logTracer
from twisted_udpsuite.tftp.transfer import EngineSettings, TransferStats
from twisted_udpsuite.tftp.workerpool import MultiProcessTFTPService

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

"""
TFTP failures as exceptions, one class per RFC 1350 / RFC 2347 error code.

A transfer that ends with an ERROR packet (from the peer, or one we send) fails with the
matching class, so callers catch what they care about (C{except FileNotFound}) and read the
peer's own words in C{message}. L{errorFor} maps a received ERROR to its class; C{code} on
every class gives the code to send for it; L{errorForOSError} maps a local failure to the
error to send.
"""

from __future__ import annotations

import errno
import os

from twisted_udpsuite.tftp.wire import Error, ErrorCode

__all__ = [
    "AccessViolation",
    "DiskFull",
    "FileExists",
    "FileNotFound",
    "IllegalOperation",
    "NoSuchUser",
    "OptionNegotiationRefused",
    "ProtocolError",
    "RemoteError",
    "TFTPError",
    "TransferTimeout",
    "UnknownTransferID",
    "errorFor",
    "errorForOSError",
]


class TFTPError(Exception):
    """
    Base of every TFTP transfer failure.

    @ivar code: The TFTP error code that describes this failure on the wire.
    @ivar message: Human-readable text; for a peer's ERROR, the peer's message.
    """

    code: int = ErrorCode.NOT_DEFINED

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message or self.__class__.__name__


class RemoteError(TFTPError):
    """The peer sent ERROR 0 (or a private code): see C{message} and C{code}."""


class FileNotFound(TFTPError):
    """ERROR 1."""

    code = ErrorCode.FILE_NOT_FOUND


class AccessViolation(TFTPError):
    """ERROR 2."""

    code = ErrorCode.ACCESS_VIOLATION


class DiskFull(TFTPError):
    """ERROR 3: disk full or allocation exceeded (also a refused C{tsize})."""

    code = ErrorCode.DISK_FULL


class IllegalOperation(TFTPError):
    """ERROR 4."""

    code = ErrorCode.ILLEGAL_OPERATION


class UnknownTransferID(TFTPError):
    """ERROR 5."""

    code = ErrorCode.UNKNOWN_TRANSFER_ID


class FileExists(TFTPError):
    """ERROR 6."""

    code = ErrorCode.FILE_EXISTS


class NoSuchUser(TFTPError):
    """ERROR 7."""

    code = ErrorCode.NO_SUCH_USER


class OptionNegotiationRefused(TFTPError):
    """ERROR 8 (RFC 2347): one side would not accept the other's options."""

    code = ErrorCode.OPTION_REFUSED


class TransferTimeout(TFTPError):
    """The peer went silent: every retransmission went unanswered."""

    code = ErrorCode.NOT_DEFINED


class ProtocolError(TFTPError):
    """The peer broke the protocol (a packet that makes no sense at this point)."""

    code = ErrorCode.ILLEGAL_OPERATION


_BY_CODE: dict[int, type[TFTPError]] = {
    ErrorCode.FILE_NOT_FOUND: FileNotFound,
    ErrorCode.ACCESS_VIOLATION: AccessViolation,
    ErrorCode.DISK_FULL: DiskFull,
    ErrorCode.ILLEGAL_OPERATION: IllegalOperation,
    ErrorCode.UNKNOWN_TRANSFER_ID: UnknownTransferID,
    ErrorCode.FILE_EXISTS: FileExists,
    ErrorCode.NO_SUCH_USER: NoSuchUser,
    ErrorCode.OPTION_REFUSED: OptionNegotiationRefused,
}


def errorFor(packet: Error) -> TFTPError:
    """The exception for an ERROR packet received from the peer, carrying its message."""
    cls = _BY_CODE.get(int(packet.code), RemoteError)
    return cls(packet.message, int(packet.code))


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def errorForOSError(error: OSError, doing: str) -> TFTPError:
    """
    The TFTP error that tells a peer about a local C{error}: a missing file, one that
    exists, a refused access, a full disk, or else ERROR 0 saying what we were C{doing}
    (C{"Cannot open file"}) and why.
    """
    if isinstance(error, FileNotFoundError) or error.errno == errno.ENOTDIR:
        return FileNotFound("File not found")
    if isinstance(error, FileExistsError):
        return FileExists("File already exists")
    if isinstance(error, PermissionError | IsADirectoryError) or error.errno == errno.ELOOP:
        return AccessViolation("Access violation")
    if error.errno in _DISK_FULL:
        return DiskFull("Disk full or allocation exceeded")
    return TFTPError(f"{doing}: {os.strerror(error.errno) if error.errno else error}")

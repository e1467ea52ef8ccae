"""
The errors of the file server's client (L{twisted_udpsuite.files.client}); each
message is fit for a user.
"""

from __future__ import annotations

__all__ = [
    "DigestMismatch",
    "FetchError",
    "FileChanged",
    "InsufficientSpace",
    "ServerError",
    "TransferInterrupted",
]


class FetchError(Exception):
    """A download or query failed; the message is fit for a user."""


class ServerError(FetchError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server said {status} {message}")
        self.status = status
        self.serverMessage = message


class DigestMismatch(FetchError):
    """The bytes received do not hash to the server's sha256 (the part is removed)."""


class FileChanged(FetchError):
    """The file changed on the server while it was sent; fetch again."""


class TransferInterrupted(FetchError):
    """The connection was lost mid-body; the partial file is kept for a resume."""


class InsufficientSpace(FetchError):
    """
    The destination's filesystem has no room for the bytes still to come: found from
    the answer's head, before anything is written (a part file is kept as it was).
    """

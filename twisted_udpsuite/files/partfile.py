"""
What a resumable download keeps on disk: C{LOCAL.part} and its sidecar
C{LOCAL.part.json}, which names the remote path and the file version the part holds
bytes of; and the room left for the rest.
"""

from __future__ import annotations

import json
import os

from twisted.python.filepath import FilePath

__all__ = ["PART_SUFFIX", "SIDECAR_SUFFIX", "PartFile", "freeSpace"]

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"


class PartFile:
    """C{LOCAL.part} and its sidecar: what a resume needs to know."""

    def __init__(self, destination: FilePath[str], remote: str) -> None:
        self.path = destination.siblingExtension(PART_SUFFIX).path
        self.sidecar = destination.siblingExtension(SIDECAR_SUFFIX).path
        self.remote = remote

    def resumable(self) -> tuple[int, str | None]:
        """(bytes held, version) of a part of this same remote file, else (0, None)."""
        try:
            with open(self.sidecar) as f:
                meta = json.load(f)
            size = os.path.getsize(self.path)
        except (OSError, ValueError):
            return 0, None
        if not isinstance(meta, dict) or meta.get("remote") != self.remote:
            return 0, None
        version = meta.get("version")
        if not isinstance(version, str) or size > int(meta.get("size", -1)):
            return 0, None
        return size, version

    def writeSidecar(self, version: str, size: int) -> None:
        """Record the remote path, version and size the part holds bytes of."""
        tmp = self.sidecar + ".new"
        with open(tmp, "w") as f:
            json.dump({"remote": self.remote, "version": version, "size": size}, f)
        os.replace(tmp, self.sidecar)

    def remove(self) -> None:
        """Remove the part and its sidecar (what is missing is not an error)."""
        for name in (self.path, self.sidecar):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


def freeSpace(directory: str) -> int | None:
    """Bytes an unprivileged writer may still use in C{directory}'s filesystem."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs (Windows), or an odd filesystem
        return None
    return st.f_bavail * st.f_frsize

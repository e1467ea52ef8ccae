"""
The same root over HTTP (C{--http-port}), through C{twisted.web.static.File}.

Imported only when HTTP is asked for, so the file service does not load twisted.web.
"""

from __future__ import annotations

from typing import Any

from twisted.python.filepath import FilePath
from twisted.web import pages, server, static

from twisted_udpsuite.paths import isTemporaryName, isWithin

__all__ = ["ConfinedFile", "confinedFile", "httpSite"]


class ConfinedFile(static.File):
    """C{static.File} that will not follow a symlink out of C{root} nor show uploads."""

    confinedRoot: FilePath

    def getChild(self, path: bytes, request: Any) -> Any:
        child = super().getChild(path, request)
        if isinstance(child, static.File):
            name = child.basename()
            if not isWithin(self.confinedRoot, child) or isTemporaryName(name):
                return pages.notFound()
        return child

    def createSimilarFile(self, path: str) -> ConfinedFile:
        f: ConfinedFile = super().createSimilarFile(path)
        f.confinedRoot = self.confinedRoot
        return f


def confinedFile(root: FilePath) -> ConfinedFile:
    """The HTTP resource for C{root}."""
    f = ConfinedFile(root.path)
    f.confinedRoot = root
    return f


def httpSite(root: FilePath) -> server.Site:
    """A quiet C{Site} serving C{root} (Range requests, listings, no escapes)."""
    site = server.Site(confinedFile(root))
    site.noisy = False
    return site

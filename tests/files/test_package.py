"""What C{twisted_udpsuite.files} exports: the names the docs import, and nothing missing."""

from __future__ import annotations

import subprocess
import sys

import twisted_udpsuite.files as files


def test_libraryNames() -> None:
    """The documented library names are exported, and every exported name exists."""
    documented = {"fetch", "listDirectory", "stat", "FileServerFactory", "NothingReceived",
                  "PlainFileFactory", "fetchPlain", "FetchError", "FetchResult"}  # fmt: skip
    assert documented <= set(files.__all__)
    assert [name for name in files.__all__ if not hasattr(files, name)] == []


def test_noWebUntilAsked() -> None:
    """Importing the package does not load twisted.web (only the HTTP port needs it)."""
    code = "import sys, twisted_udpsuite.files; print('twisted.web' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_importLeavesSystemdSockets() -> None:
    """
    Importing the package (as twistd's plugin does) leaves systemd's LISTEN_* variables
    for the services' activation: twisted.internet.endpoints would clear them.
    """
    code = (
        "import os; os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1',"
        " LISTEN_FDNAMES='files'); import twisted_udpsuite.files, twisted_udpsuite.tap;"
        " print(os.environ.get('LISTEN_FDS'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"

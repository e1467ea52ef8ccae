"""
Outside TFTP servers for the interop tests: where to find them, and how to get atftpd.

Debian's tftpd-hpa and atftpd conflict, so atftpd is unpacked privately (C{apt-get download}
then C{dpkg -x}; no root needed). L{atftpd} looks in C{.peers/atftpd} (where
C{.ci/install-peers} puts it), then in a per-user cache, and fetches it there if missing.
CI can run this module to fetch it ahead of time: C{python -m tests.tftp.peers}.

Missing peers skip their tests with the reason, except when C{CI} is set: then they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
_RELATIVE = "usr/sbin/atftpd"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def inTftpd() -> str:
    """The path of tftp-hpa's C{in.tftpd}, or skip (fail in CI)."""
    path = shutil.which("in.tftpd") or shutil.which("in.tftpd", path="/usr/sbin:/sbin")
    if path is None:
        _unavailable("in.tftpd is not installed (apt-get install tftpd-hpa)")
    return path  # type: ignore[return-value]


def _cacheDir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(tempfile.gettempdir(), "udpsuite-peers")
    return Path(base) / f"atftpd-{os.getuid()}"


def installAtftpd() -> str | None:
    """
    Find atftpd, unpacking Debian's package into the cache if needed; C{None} if impossible.

    Runs C{apt-get download} and C{dpkg -x} synchronously: call it before the reactor has work
    (a session fixture, or CI's set-up), never from inside a running test.
    """
    for root in (_REPO / ".peers" / "atftpd", _cacheDir()):
        candidate = root / _RELATIVE
        if os.access(candidate, os.X_OK):
            return str(candidate)
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        return None
    target = _cacheDir()
    try:
        with tempfile.TemporaryDirectory() as work:
            subprocess.run(
                ["apt-get", "download", "-qq", "atftpd"],
                cwd=work,
                check=True,
                capture_output=True,
                timeout=120,
            )
            debs = glob.glob(os.path.join(work, "atftpd_*.deb"))
            if not debs:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent))
            subprocess.run(
                ["dpkg", "-x", debs[0], str(staging)], check=True, capture_output=True, timeout=120
            )
            if not target.exists():
                staging.rename(target)
            else:
                shutil.rmtree(staging, ignore_errors=True)
    except (OSError, subprocess.SubprocessError):
        return None
    candidate = target / _RELATIVE
    return str(candidate) if os.access(candidate, os.X_OK) else None


def atftpd() -> str:
    """The path of a runnable atftpd, or skip (fail in CI)."""
    path = installAtftpd()
    if path is None:
        _unavailable(
            "atftpd is not available and could not be fetched "
            "(apt-get download atftpd && dpkg -x atftpd_*.deb DIR; or bash .ci/install-peers)"
        )
    return path  # type: ignore[return-value]


if __name__ == "__main__":
    found = installAtftpd()
    print(found or "atftpd: unavailable")
    sys.exit(0 if found else 1)

"""
Outside TFTP servers for the interop tests: where to find them, and how to get them.

Debian's tftpd-hpa and atftpd conflict, and both install C{/usr/sbin/in.tftpd}, so the system's
copy may be either (or a leftover of a removed package): both servers are unpacked privately
instead (C{apt-get download} then C{dpkg -x}; no root needed), and each copy is run once to
check it is the right program.  L{privatePeer} looks in C{.peers/PACKAGE} (where
C{.ci/install-peers} puts it), then in a per-user cache, and fetches it there if missing.
CI can run this module to fetch both ahead of time: C{python -m tests.tftp.peers}.

Missing peers skip their tests with the reason, except when C{CI} is set: then they fail.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]

#: Each private peer: its program inside the package, the option that makes it say what it
#: is, and what that answer starts with (as C{.ci/install-peers} checks it too).
PEERS = {
    "tftpd-hpa": ("usr/sbin/in.tftpd", "-V", r"tftp-hpa "),
    "atftpd": ("usr/sbin/atftpd", "--version", r"atftp-\S+ \(server\)"),
}


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _cacheDir(package: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(tempfile.gettempdir(), "udpsuite-peers")
    return Path(base) / f"{package}-{os.getuid()}"


def isPeer(root: Path, package: str) -> bool:
    """Whether C{root} holds C{package}'s server and running it says it is that server."""
    relative, option, answer = PEERS[package]
    program = root / relative
    if not os.access(program, os.X_OK):
        return False
    try:
        said = subprocess.run(
            [str(program), option], capture_output=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return re.match(answer, (said.stdout + said.stderr).decode(errors="replace")) is not None


def privatePeer(package: str) -> str | None:
    """
    The path of C{package}'s server from a private unpack, fetched into the cache if needed
    (or if the copy there is not the right program); C{None} if impossible.

    Runs C{apt-get download} and C{dpkg -x} synchronously: call it before the reactor has work
    (a session fixture, or CI's set-up), never from inside a running test.
    """
    relative = PEERS[package][0]
    for root in (_REPO / ".peers" / package, _cacheDir(package)):
        if isPeer(root, package):
            return str(root / relative)
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        return None
    target = _cacheDir(package)
    try:
        with tempfile.TemporaryDirectory() as work:
            os.chmod(work, 0o777)  # apt-get download writes as the _apt user
            subprocess.run(
                ["apt-get", "download", "-qq", package],
                cwd=work,
                check=True,
                capture_output=True,
                timeout=120,
            )
            debs = glob.glob(os.path.join(work, f"{package}_*.deb"))
            if not debs:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent))
            subprocess.run(
                ["dpkg", "-x", debs[0], str(staging)], check=True, capture_output=True, timeout=120
            )
            if not isPeer(staging, package):
                shutil.rmtree(staging, ignore_errors=True)
                return None
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    except (OSError, subprocess.SubprocessError):
        return None
    return str(target / relative)


def _peer(package: str) -> str:
    path = privatePeer(package)
    if path is None:
        _unavailable(
            f"{package} is not available and could not be fetched (apt-get download "
            f"{package} && dpkg -x {package}_*.deb DIR; or bash .ci/install-peers)"
        )
    return path  # type: ignore[return-value]


def inTftpd() -> str:
    """The path of tftp-hpa's C{in.tftpd} (a private copy), or skip (fail in CI)."""
    return _peer("tftpd-hpa")


def atftpd() -> str:
    """The path of a runnable atftpd (a private copy), or skip (fail in CI)."""
    return _peer("atftpd")


if __name__ == "__main__":
    found = {package: privatePeer(package) for package in PEERS}
    for package, path in found.items():
        print(f"{package}: {path or 'unavailable'}")
    sys.exit(0 if all(found.values()) else 1)

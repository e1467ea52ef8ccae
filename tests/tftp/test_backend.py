"""The filesystem backend: confinement, refusals, atomic and limited uploads, disk full."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath
from zope.interface.verify import verifyObject

from twisted_udpsuite.paths import AtomicFileWriter
from twisted_udpsuite.tftp.backend import (
    AccessViolation,
    DiskFull,
    FileExists,
    FileNotFound,
    FilesystemBackend,
    FileWriter,
    IBackend,
    IReader,
    IWriter,
)
from twisted_udpsuite.tftp.errors import TFTPError, errorForOSError

PEER = ("192.0.2.2", 1234)


@pytest.fixture
def root(tmp_path: Any) -> FilePath:
    path = FilePath(str(tmp_path / "root"))
    path.createDirectory()
    path.child("f").setContent(b"hello")
    path.child("sub").createDirectory()
    return path


def test_interfaces(root: FilePath) -> None:
    backend = FilesystemBackend(root, writable=True)
    assert verifyObject(IBackend, backend)
    reader = backend.openRead(b"f", PEER)
    assert verifyObject(IReader, reader)
    assert reader.size == 5
    assert reader.read(3) == b"hel"
    assert reader.read(10) == b"lo"
    assert reader.read(10) == b""
    reader.close()
    writer = backend.openWrite(b"new", PEER, None)
    assert verifyObject(IWriter, writer)
    writer.abort()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        (b"missing", FileNotFound),
        (b"sub/missing", FileNotFound),
        (b"f/x", FileNotFound),
        (b"../f", AccessViolation),
        (b"sub/../../f", AccessViolation),
        (b"a\x00b", AccessViolation),
        (b"\xff\xfe", AccessViolation),
        (b"C:\\f", AccessViolation),
        (b"sub", AccessViolation),
        (b"/", AccessViolation),
        (b"fifo", AccessViolation),
        (b"out", AccessViolation),
        (b"dev", AccessViolation),
        (b".f.0123456789ab.part", FileNotFound),
    ],
)
def test_readRefusals(root: FilePath, tmp_path: Any, name: bytes, error: type) -> None:
    os.mkfifo(root.child("fifo").path)
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(str(tmp_path / "secret"), root.child("out").path)
    os.symlink("/dev/zero", root.child("dev").path)
    root.child(".f.0123456789ab.part").setContent(b"half")
    with pytest.raises(error):
        FilesystemBackend(root).openRead(name, PEER)


def test_leadingSlashAndBackslashes(root: FilePath) -> None:
    backend = FilesystemBackend(root)
    for name in (b"/f", b"\\f", b"//f"):
        reader = backend.openRead(name, PEER)
        assert reader.read(5) == b"hello"
        reader.close()


def test_symlinkInsideIsServed(root: FilePath) -> None:
    os.symlink("f", root.child("alias").path)
    reader = FilesystemBackend(root).openRead(b"alias", PEER)
    assert reader.read(10) == b"hello"
    reader.close()


def test_writePolicy(root: FilePath) -> None:
    with pytest.raises(AccessViolation):
        FilesystemBackend(root).openWrite(b"new", PEER, None)
    with pytest.raises(FileExists):
        FilesystemBackend(root, writable=True).openWrite(b"f", PEER, None)
    with pytest.raises(AccessViolation):
        FilesystemBackend(root, writable=True, allowCreate=False).openWrite(b"new", PEER, None)
    with pytest.raises(AccessViolation):
        FilesystemBackend(root, writable=True, allowOverwrite=True).openWrite(b"sub", PEER, None)
    with pytest.raises(FileNotFound):
        FilesystemBackend(root, writable=True).openWrite(b"nodir/x", PEER, None)
    with pytest.raises(AccessViolation):
        FilesystemBackend(root, writable=True).openWrite(b"../x", PEER, None)
    with pytest.raises(DiskFull):
        FilesystemBackend(root, writable=True, maxUploadSize=10).openWrite(b"x", PEER, 11)


def test_atomicOverwrite(root: FilePath) -> None:
    backend = FilesystemBackend(root, writable=True, allowOverwrite=True)
    writer = backend.openWrite(b"f", PEER, None)
    writer.write(b"new ")
    assert root.child("f").getContent() == b"hello"
    writer.write(b"content")
    writer.finish()
    assert root.child("f").getContent() == b"new content"
    writer = backend.openWrite(b"f", PEER, None)
    writer.write(b"partial")
    writer.abort()
    assert root.child("f").getContent() == b"new content"
    assert sorted(root.listdir()) == ["f", "sub"]


def test_runningLimit(root: FilePath) -> None:
    backend = FilesystemBackend(root, writable=True, maxUploadSize=10)
    writer = backend.openWrite(b"x", PEER, None)
    writer.write(b"12345")
    with pytest.raises(DiskFull):
        writer.write(b"678901")
    assert sorted(root.listdir()) == ["f", "sub"]


class _FullDisk:
    def write(self, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def commit(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def abort(self) -> None:
        pass


def test_diskFull() -> None:
    writer = FileWriter(_FullDisk(), None)  # type: ignore[arg-type]
    writer.write(b"small, buffered")
    with pytest.raises(DiskFull):
        writer.write(b"x" * 300_000)
    writer = FileWriter(_FullDisk(), None)  # type: ignore[arg-type]
    writer.write(b"x")
    with pytest.raises(DiskFull):
        writer.finish()


def _leftover(directory: FilePath, name: str, age: float) -> FilePath:
    """A temporary upload file as a killed run leaves it, last written C{age} s ago."""
    writer = AtomicFileWriter(directory.child(name), overwrite=False)
    writer.write(b"x" * 100)
    left = FilePath(writer.tempPath.path + ".keep")
    os.link(writer.tempPath.path, left.path)
    temp = writer.tempPath
    writer.abort()
    os.rename(left.path, temp.path)
    when = os.stat(temp.path).st_mtime - age
    os.utime(temp.path, (when, when))
    return temp


@pytest.mark.parametrize("keep", [False, True])
def test_cleanStaleUploads(root: FilePath, keep: bool) -> None:
    """
    #19 §3: at start, a writable root's uploads left by a killed run (an hour unwritten)
    are removed, or with keepStaleUploads only reported; a live one is left alone.
    """
    stale = [_leftover(root, "a.bin", 7200), _leftover(root.child("sub"), "b.bin", 3601)]
    live = _leftover(root, "c.bin", 10)
    backend = FilesystemBackend(root, writable=True, keepStaleUploads=keep)
    with capturedLogs() as events:
        assert backend.cleanStaleUploads() == sorted(stale, key=lambda p: p.path)
    assert [p.exists() for p in stale] == [keep, keep]
    assert live.exists()
    (event,) = [e for e in events if "staleUploads" in e]
    assert event["count"] == 2 and event["bytes"] == 200
    assert sorted(event["staleUploads"]) == sorted(
        [stale[0].basename(), "sub/" + stale[1].basename()]
    )
    assert event["action"].startswith("kept" if keep else "removed")


def test_readOnlyRootIsNotCleaned(root: FilePath) -> None:
    stale = _leftover(root, "a.bin", 7200)
    assert FilesystemBackend(root).cleanStaleUploads() == []
    assert stale.exists()


@pytest.mark.parametrize(
    "error, expected, message",
    [
        (FileNotFoundError(errno.ENOENT, "x"), FileNotFound, "File not found"),
        (OSError(errno.ENOTDIR, "x"), FileNotFound, "File not found"),
        (FileExistsError(errno.EEXIST, "x"), FileExists, "File already exists"),
        (PermissionError(errno.EACCES, "x"), AccessViolation, "Access violation"),
        (OSError(errno.ELOOP, "x"), AccessViolation, "Access violation"),
        (OSError(errno.ENOSPC, "x"), DiskFull, "Disk full or allocation exceeded"),
        (OSError(errno.EDQUOT, "x"), DiskFull, "Disk full or allocation exceeded"),
        (OSError(errno.EIO, "x"), TFTPError, f"Cannot open file: {os.strerror(errno.EIO)}"),
    ],
)
def test_errorForOSError(error: OSError, expected: type, message: str) -> None:
    """One mapping from a local failure to the TFTP error a peer is sent."""
    mapped = errorForOSError(error, "Cannot open file")
    assert type(mapped) is expected and mapped.message == message

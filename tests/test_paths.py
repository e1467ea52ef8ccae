"""
Tests for L{twisted_udpsuite.paths}: the escape table, symlinks, and atomic uploads.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.python.filepath import FilePath

from twisted_udpsuite.paths import (
    AtomicFileWriter,
    UnsafePath,
    checkWritable,
    findStaleTemporaryFiles,
    isTemporaryName,
    isWithin,
    relativeName,
    safeDescendant,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """
    A root with files, a subdir, symlinks in and out, next to a sibling C{root2}.

    Layout::

        tmp/outside/secret
        tmp/root2/x
        tmp/root/file, root/sub/inner
        root/alias -> root/sub         root/aliasFile -> root/file
        root/outDir -> tmp/outside     root/outFile -> tmp/outside/secret
        root/dangling -> tmp/outside/new
        root/inDangling -> root/sub/new
    """
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (tmp_path / "root2").mkdir()
    (tmp_path / "root2" / "x").write_bytes(b"sibling")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "file").write_bytes(b"file")
    (root / "sub" / "inner").write_bytes(b"inner")
    (root / "alias").symlink_to(root / "sub")
    (root / "aliasFile").symlink_to("file")
    (root / "outDir").symlink_to(outside)
    (root / "outFile").symlink_to(outside / "secret")
    (root / "dangling").symlink_to(outside / "new")
    (root / "inDangling").symlink_to(root / "sub" / "new")
    return root


def refused(root: Path, request: str | bytes, **kw: bool) -> UnsafePath:
    with pytest.raises(UnsafePath) as info:
        safeDescendant(FilePath(str(root)), request, **kw)
    return info.value


def resolve(root: Path, request: str | bytes, **kw: bool) -> str:
    return safeDescendant(FilePath(str(root)), request, **kw).path


@pytest.mark.parametrize(
    "request_",
    [
        "../x",
        "a/../../x",
        "sub/../../x",
        "../root2/x",
        "..",
        ".",
        "./file",
        "sub/.",
        "a//b",
        "sub/",
        "\\file",
        "sub\\inner",
        "..\\root2\\x",
        "C:",
        "c:file",
        "C:\\x",
        "C:/x",
        "/C:/x",
        "fi\x00le",
        "file\x00",
        "a\nb",
        "a\x7fb",
        "\udcff",
        b"\xff\xfe",
        b"caf\xe9",
        b"sub/\x00",
        "x" * 256,
        "x" * 4096,
        "a/" * 2048 + "x",
    ],
)
def test_refused(tree: Path, request_: str | bytes) -> None:
    """
    Traversal, empty/dot segments, backslashes, drive letters, NUL, control characters,
    bad encodings and overlong names are all refused with L{UnsafePath}, never OSError.
    """
    error = refused(tree, request_)
    assert error.reason
    assert isinstance(error, ValueError)


def test_unsafeReasonInMessage(tree: Path) -> None:
    """
    The exception says which rule fired, for the server's log.
    """
    error = refused(tree, "a/../../x")
    assert error.request == "a/../../x"
    assert "'..'" in str(error)


def test_subDotDotWithExistingSub(tree: Path) -> None:
    """
    C{sub/../../x} is refused even though C{sub} exists (the py3tftp escape).
    """
    assert (tree / "sub").is_dir()
    refused(tree, "sub/../../x")
    refused(tree, "sub/../file")


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ("file", "file"),
        ("/file", "file"),
        ("//file", "file"),
        ("///sub/inner", "sub/inner"),
        ("sub/inner", "sub/inner"),
        ("/abs/path", "abs/path"),
        ("new-upload", "new-upload"),
        ("sub/new-upload", "sub/new-upload"),
        ("missing/dir/x", "missing/dir/x"),
        ("ab:c", "ab:c"),
        ("sub/a:b", "sub/a:b"),
        ("sub/C:", "sub/C:"),
        ("CON", "CON"),
        ("NUL.txt", "NUL.txt"),
        ("...", "..."),
        ("café", "café"),
        (b"caf\xc3\xa9", "café"),
        ("x" * 255, "x" * 255),
    ],
)
def test_allowed(tree: Path, request_: str | bytes, expected: str) -> None:
    """
    Leading slashes are relative to the root (PXE's C{/pxelinux.0}); colons after the first
    segment, device names and UTF-8 are ordinary names.
    """
    assert resolve(tree, request_) == str(tree / expected)


@pytest.mark.parametrize("request_", ["", "/", "//"])
def test_emptyIsRoot(tree: Path, request_: str) -> None:
    """
    An empty request (or only slashes) names the root; callers decide about directories.
    """
    assert resolve(tree, request_) == str(tree)


def test_rootPrefixedNameStaysUnderRoot(tree: Path) -> None:
    """
    A request spelling the root's own absolute path (or its sibling C{root2}) is just a
    relative name under the root, not the real directory.
    """
    own = str(tree) + "/file"
    assert resolve(tree, own) == str(tree) + own
    sibling = str(tree.parent / "root2" / "x")
    assert resolve(tree, sibling) == str(tree) + sibling


def test_siblingPrefixIsNotInside(tree: Path) -> None:
    """
    Containment compares segments: C{root2} is not inside C{root} though it shares a prefix.
    """
    root = FilePath(str(tree))
    assert not isWithin(root, FilePath(str(tree.parent / "root2" / "x")))
    assert not isWithin(root, FilePath(str(tree.parent / "root2")))
    assert isWithin(root, FilePath(str(tree / "sub" / "inner")))
    assert isWithin(root, root)


@pytest.mark.parametrize(
    "request_", ["outFile", "outDir", "outDir/secret", "outDir/new", "dangling", "alias/../../x"]
)
def test_symlinkOutRefused(tree: Path, request_: str) -> None:
    """
    Symlinks inside the root that point out (to a file, a directory, or nowhere yet) are
    refused, including upload targets under a symlinked directory.
    """
    refused(tree, request_)


def test_symlinkInsideAllowed(tree: Path) -> None:
    """
    Symlinks that stay inside the root are fine; the result is the resolved path.
    """
    assert resolve(tree, "alias/inner") == str(tree / "sub" / "inner")
    assert resolve(tree, "alias/new") == str(tree / "sub" / "new")
    assert resolve(tree, "aliasFile") == str(tree / "file")
    assert resolve(tree, "inDangling") == str(tree / "sub" / "new")


def test_symlinkedRoot(tree: Path) -> None:
    """
    A root given through a symlink works; results are real paths, L{relativeName} still
    gives the name relative to the root.
    """
    link = tree.parent / "rootLink"
    link.symlink_to(tree)
    rootLink = FilePath(str(link))
    result = safeDescendant(rootLink, "sub/inner")
    assert result.path == str(tree / "sub" / "inner")
    assert isWithin(rootLink, result)
    assert relativeName(rootLink, result) == "sub/inner"
    with pytest.raises(UnsafePath):
        safeDescendant(rootLink, "outDir/secret")


def test_backslashSeparatorOptIn(tree: Path) -> None:
    """
    With C{backslashSeparator=True} a backslash separates like C{/} (PXE ROMs), and the
    same rules then apply to its segments.
    """
    assert resolve(tree, "\\sub\\inner", backslashSeparator=True) == str(tree / "sub" / "inner")
    assert resolve(tree, "sub\\inner", backslashSeparator=True) == str(tree / "sub" / "inner")
    for bad in ["..\\root2\\x", "sub\\..\\..\\x", "C:\\x", "a\\\\b", "outDir\\secret"]:
        refused(tree, bad, backslashSeparator=True)


def test_bytesRoot(tree: Path) -> None:
    """
    A bytes-mode root is accepted; the result is text-mode.
    """
    result = safeDescendant(FilePath(os.fsencode(tree)), b"/sub/inner")
    assert result.path == str(tree / "sub" / "inner")


def test_relativeName(tree: Path) -> None:
    """
    L{relativeName} gives C{/}-separated names for logs, C{.} for the root, and refuses
    paths outside.
    """
    root = FilePath(str(tree))
    assert relativeName(root, safeDescendant(root, "sub/inner")) == "sub/inner"
    assert relativeName(root, root) == "."
    with pytest.raises(ValueError):
        relativeName(root, FilePath(str(tree.parent / "root2")))


_PIECES = [
    "..",
    ".",
    "/",
    "//",
    "\\",
    "\x00",
    ":",
    "C:",
    "sub",
    "alias",
    "outDir",
    "outFile",
    "dangling",
    "root2",
    "file",
    "x",
    "",
]
_requests = st.one_of(
    st.text(),
    st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
    st.lists(st.sampled_from(_PIECES + ["/"] * 6), max_size=12).map("".join),
)


def assertSafe(root: Path, request: str | bytes, backslashSeparator: bool) -> None:
    try:
        result = safeDescendant(FilePath(str(root)), request, backslashSeparator=backslashSeparator)
    except UnsafePath:
        return
    real = os.path.realpath(result.path)
    rootReal = os.path.realpath(root)
    assert os.path.commonpath([rootReal, real]) == rootReal


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=400)
@given(request=_requests, backslashSeparator=st.booleans())
def test_neverEscapesText(tree: Path, request: str, backslashSeparator: bool) -> None:
    """
    For any text request, L{safeDescendant} raises L{UnsafePath} or returns a path whose
    realpath is inside the root's realpath.  (The tree is only read, so sharing the fixture
    across examples is fine.)
    """
    assertSafe(tree, request, backslashSeparator)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(request=st.binary(), backslashSeparator=st.booleans())
def test_neverEscapesBytes(tree: Path, request: bytes, backslashSeparator: bool) -> None:
    """
    The same holds for raw bytes from the wire, and nothing but L{UnsafePath} is raised.
    """
    assertSafe(tree, request, backslashSeparator)


# Atomic writer


def tempFiles(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if isTemporaryName(p.name))


def test_commitPublishes(tmp_path: Path) -> None:
    """
    Written data appears under the target name only at commit; nothing is left behind.
    """
    target = tmp_path / "upload.bin"
    writer = AtomicFileWriter(FilePath(str(target)), overwrite=False)
    writer.write(b"hello ")
    writer.write(memoryview(b"world"))
    assert not target.exists()
    assert writer.bytesWritten == 11
    writer.commit()
    assert target.read_bytes() == b"hello world"
    assert tempFiles(tmp_path) == []
    assert list(tmp_path.iterdir()) == [target]


def test_commitOverwrites(tmp_path: Path) -> None:
    """
    With C{overwrite=True} an existing file is replaced (a new inode, so hard links to the
    old one keep the old content).
    """
    target = tmp_path / "f"
    target.write_bytes(b"old")
    hardLink = tmp_path / "hard"
    os.link(target, hardLink)
    with AtomicFileWriter(FilePath(str(target)), overwrite=True) as writer:
        writer.write(b"new")
        writer.commit()
    assert target.read_bytes() == b"new"
    assert hardLink.read_bytes() == b"old"


def test_tempIsHiddenSibling(tmp_path: Path) -> None:
    """
    The temporary file is a hidden C{.part} sibling in the target's directory (so publish
    is a rename on one filesystem), and abort removes it.
    """
    target = FilePath(str(tmp_path / "pxelinux.0"))
    writer = AtomicFileWriter(target, overwrite=False)
    assert writer.tempPath.parent() == target.parent()
    name = writer.tempPath.basename()
    assert name.startswith(".pxelinux.0.") and name.endswith(".part")
    assert isTemporaryName(name)
    assert not isTemporaryName("pxelinux.0")
    assert tempFiles(tmp_path) == [name]
    writer.abort()
    assert tempFiles(tmp_path) == []


def test_longTargetNameTempFits(tmp_path: Path) -> None:
    """
    A 255-byte target name still gets a temporary name within NAME_MAX.
    """
    target = tmp_path / ("n" * 255)
    with AtomicFileWriter(FilePath(str(target)), overwrite=False) as writer:
        assert len(writer.tempPath.basename()) <= 255
        writer.write(b"x")
        writer.commit()
    assert target.read_bytes() == b"x"


def test_abortLeavesTargetIntact(tmp_path: Path) -> None:
    """
    Abort leaves an existing target untouched, removes the temp file, and is idempotent
    (also when the temp file has vanished already).
    """
    target = tmp_path / "f"
    target.write_bytes(b"old")
    writer = AtomicFileWriter(FilePath(str(target)), overwrite=True)
    writer.write(b"partial")
    writer.abort()
    writer.abort()
    assert target.read_bytes() == b"old"
    assert tempFiles(tmp_path) == []
    other = AtomicFileWriter(FilePath(str(target)), overwrite=True)
    os.unlink(other.tempPath.path)
    other.abort()
    with pytest.raises(ValueError):
        other.write(b"x")
    with pytest.raises(ValueError):
        other.commit()


def test_exceptionInWithAborts(tmp_path: Path) -> None:
    """
    An exception inside C{with} aborts; leaving the block without commit aborts too.
    """
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with AtomicFileWriter(FilePath(str(target)), overwrite=True) as writer:
            writer.write(b"new")
            raise RuntimeError("transfer timed out")
    with AtomicFileWriter(FilePath(str(target)), overwrite=True) as writer:
        writer.write(b"new")
    assert target.read_bytes() == b"old"
    assert tempFiles(tmp_path) == []


def test_noOverwriteExisting(tmp_path: Path) -> None:
    """
    C{overwrite=False} with an existing target fails at construction (before any temp file)
    and leaves the target intact; a dangling symlink counts as existing.
    """
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        AtomicFileWriter(FilePath(str(target)), overwrite=False)
    assert target.read_bytes() == b"old"
    assert tempFiles(tmp_path) == []
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        checkWritable(FilePath(str(tmp_path / "dangling")), False)
    checkWritable(FilePath(str(tmp_path / "dangling")), True)


def test_noOverwriteRace(tmp_path: Path) -> None:
    """
    If the target appears after construction, commit with C{overwrite=False} raises
    C{FileExistsError}, keeps the newcomer and removes the temp file.
    """
    target = tmp_path / "f"
    writer = AtomicFileWriter(FilePath(str(target)), overwrite=False)
    writer.write(b"mine")
    target.write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        writer.commit()
    assert target.read_bytes() == b"theirs"
    assert tempFiles(tmp_path) == []


def test_noOverwriteWithoutHardLinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    On filesystems without hard links the no-clobber publish falls back to check + rename.
    """

    def noLink(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", noLink)
    target = tmp_path / "f"
    writer = AtomicFileWriter(FilePath(str(target)), overwrite=False)
    writer.write(b"data")
    writer.commit()
    assert target.read_bytes() == b"data"
    assert tempFiles(tmp_path) == []


def test_checkWritable(tmp_path: Path) -> None:
    """
    Directories are refused even with overwrite, existing files only without it.
    """
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"")
    (tmp_path / "dirLink").symlink_to(tmp_path / "d")
    for name in ("d", "dirLink"):
        for overwrite in (True, False):
            with pytest.raises(IsADirectoryError):
                checkWritable(FilePath(str(tmp_path / name)), overwrite)
            with pytest.raises(IsADirectoryError):
                AtomicFileWriter(FilePath(str(tmp_path / name)), overwrite=overwrite)
    with pytest.raises(FileExistsError):
        checkWritable(FilePath(str(tmp_path / "f")), False)
    checkWritable(FilePath(str(tmp_path / "f")), True)
    checkWritable(FilePath(str(tmp_path / "new")), False)


def test_missingDirectory(tmp_path: Path) -> None:
    """
    Uploads never create directories: a missing parent is C{FileNotFoundError}.
    """
    with pytest.raises(FileNotFoundError):
        AtomicFileWriter(FilePath(str(tmp_path / "missing" / "f")), overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_modeHonoursUmask(tmp_path: Path) -> None:
    """
    The published file gets 0o666 minus the umask, not mkstemp's 0o600.
    """
    old = os.umask(0o027)
    try:
        with AtomicFileWriter(FilePath(str(tmp_path / "f")), overwrite=False) as writer:
            writer.commit()
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_diskFullOnWrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{ENOSPC} from a write propagates unchanged, the temp file is removed and the old file
    stays.
    """
    target = tmp_path / "f"
    target.write_bytes(b"old")
    writer = AtomicFileWriter(FilePath(str(target)), overwrite=True)
    writer.write(b"first block")
    realWrite = os.write

    def fullWrite(fd: int, data: bytes) -> int:
        if fd == writer._fd:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return realWrite(fd, data)

    monkeypatch.setattr(os, "write", fullWrite)
    with pytest.raises(OSError) as info:
        writer.write(b"second block")
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert tempFiles(tmp_path) == []
    writer.abort()


def test_diskFullOnFsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{ENOSPC} reported late (at fsync, as on NFS or with delayed allocation) fails the
    commit the same way, inside a C{with} block too.
    """
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def fullFsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        with AtomicFileWriter(FilePath(str(target)), overwrite=True) as writer:
            writer.write(b"new")
            monkeypatch.setattr(os, "fsync", fullFsync)
            writer.commit()
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert tempFiles(tmp_path) == []


def test_partialWrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Short writes from C{os.write} are continued, and C{bytesWritten} counts what landed.
    """
    realWrite = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: realWrite(fd, bytes(data[:3])))
    target = tmp_path / "f"
    with AtomicFileWriter(FilePath(str(target)), overwrite=False) as writer:
        writer.write(b"0123456789")
        assert writer.bytesWritten == 10
        monkeypatch.undo()
        writer.commit()
    assert target.read_bytes() == b"0123456789"


def test_uploadThroughSafeDescendant(tree: Path) -> None:
    """
    The intended pairing: resolve the request, then write; the upload lands in the real
    directory behind an inside symlink.
    """
    target = safeDescendant(FilePath(str(tree)), "/alias/upload.img")
    with AtomicFileWriter(target, overwrite=False) as writer:
        writer.write(b"img")
        writer.commit()
    assert (tree / "sub" / "upload.img").read_bytes() == b"img"


def test_staleTemporaryFilesAreFoundByExactNameAndAge(tmp_path: Path) -> None:
    """
    #19 §3: only AtomicFileWriter's own names, only regular files, only below the root
    (no directory symlink followed), only when unwritten for the given age.
    """
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    left = root / "sub" / ".nbp.0.0123456789ab.part"  # as a killed upload leaves it
    left.write_bytes(b"half")
    writer = AtomicFileWriter(FilePath(str(root / "live")), overwrite=False)
    live = Path(writer.tempPath.path)  # the writer's own name: found once old enough
    lookalikes = [".notes.part", ".x.0123456789AB.part", ".x.0123456789ab.part.old", "x.part"]
    for name in lookalikes:
        (root / name).write_bytes(b"not ours")
    outside = tmp_path / "outside" / ".y.0123456789ab.part"
    outside.write_bytes(b"outside")
    (root / "link").symlink_to(tmp_path / "outside")
    (root / ".z.0123456789ab.part").symlink_to(outside)
    old = os.stat(left).st_mtime - 7200
    for path in (left, live, outside, *(root / name for name in lookalikes)):
        os.utime(path, (old, old))
    os.utime(live, None)  # a live upload of another process: written just now
    assert findStaleTemporaryFiles(FilePath(str(root))) == [FilePath(str(left))]
    assert findStaleTemporaryFiles(FilePath(str(root)), minimumAge=0) == sorted(
        [FilePath(str(left)), FilePath(str(live))], key=lambda p: p.path
    )
    writer.abort()

"""
The C{twisted_udpsuite.tftp} package's names: every one importable from the package, the
server's imported only when first used (so that a client does not load the server).
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import twisted_udpsuite
from twisted_udpsuite import tftp


def test_everyNameImportsFromThePackage() -> None:
    """Each name of C{__all__} is the object its module defines, however it is reached."""
    for name in tftp.__all__:
        value = getattr(tftp, name)
        home = tftp._SERVER_SIDE.get(name)
        if home is not None:
            assert value is getattr(importlib.import_module(f"twisted_udpsuite.tftp.{home}"), name)
        namespace: dict[str, object] = {}
        exec(f"from twisted_udpsuite.tftp import {name}", namespace)
        assert namespace[name] is value, name
    assert set(tftp._SERVER_SIDE) <= set(tftp.__all__)
    assert set(tftp.__all__) <= set(dir(tftp))


def test_unknownName() -> None:
    """A name the package does not have is an AttributeError (and an ImportError to import)."""
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        tftp.nothing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from twisted_udpsuite.tftp import nothing", {})


def test_typeCheckingImportsAgree() -> None:
    """
    The imports under C{TYPE_CHECKING} (what mypy and the API docs read) name exactly the
    server-side names and modules that C{__getattr__} imports.
    """
    source = Path(tftp.__file__).read_text(encoding="utf-8")
    [block] = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    imported = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        package, _, module = node.module.rpartition(".")
        assert package == "twisted_udpsuite.tftp"
        imported.update({alias.name: module for alias in node.names})
    assert imported == tftp._SERVER_SIDE


_LOADED_AFTER = """
import json, sys
for statement in sys.argv[1:]:
    exec(statement)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("twisted_udpsuite.tftp."))))
"""


def loadedAfter(*statements: str) -> set[str]:
    """The package's modules a fresh process has loaded after running C{statements}."""
    suite = str(Path(twisted_udpsuite.__file__).parents[1])  # the suite these tests import
    done = subprocess.run(
        [sys.executable, "-c", _LOADED_AFTER, *statements],
        capture_output=True,
        cwd=suite,
        timeout=60,
        check=True,
    )
    return {m.rpartition(".")[2] for m in json.loads(done.stdout)}


def test_theClientLoadsNoServer() -> None:
    """
    Importing the package, its client functions or the C{udpsuite tftp} command loads none
    of the server's modules; asking for a server name loads its module.
    """
    server = {"backend", "origin", "remap", "server", "service", "workerpool", "tap"}
    client = loadedAfter("from twisted_udpsuite.tftp import get, put, TFTPError")
    assert "client" in client and client & server == set()
    assert loadedAfter("import twisted_udpsuite.tftp.cli") & server == set()
    assert loadedAfter("from twisted_udpsuite.tftp import TFTPService") >= {"service", "server"}

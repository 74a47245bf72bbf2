"""The package surface: version, exports, docstrings, stubs, exception tree."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import r1
import r1._r1

PUBLIC = [
    "AuthError", "Client", "ClosedError", "Daemon", "DaemonNotFound", "Discovery",
    "InvalidArgument", "IoError", "Journal", "JournalCorrupt", "JournalFollow",
    "NotFoundError", "ProtocolError", "R1Error", "RpcError", "Subscription", "Timeout",
    "UnsafeDiscovery", "__version__", "dial", "discover",
]


def test_version_matches_the_crate() -> None:
    cargo = (Path(__file__).resolve().parents[2] / "Cargo.toml").read_text()
    m = re.search(r'^version = "([^"]+)"', cargo, re.M)
    assert m is not None
    assert r1.__version__ == m.group(1)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", r1.__version__)


def test_all_is_the_curated_surface() -> None:
    assert sorted(r1.__all__) == sorted(PUBLIC)
    for name in r1.__all__:
        assert getattr(r1, name) is getattr(r1._r1, name)


def test_every_public_name_has_a_docstring() -> None:
    assert r1.__doc__ and "discover" in r1.__doc__
    for name in PUBLIC:
        if name == "__version__":
            continue
        obj = getattr(r1, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member) and not hasattr(member, "__get__"):
                    continue
                if attr in ("kind", "data", "code", "message", "report"):
                    continue  # exception class attributes (defaults), documented on the class
                assert getattr(member, "__doc__", None), f"{name}.{attr} has no docstring"


def test_exception_tree() -> None:
    for name in ("DaemonNotFound", "UnsafeDiscovery", "AuthError", "RpcError",
                 "JournalCorrupt", "Timeout", "InvalidArgument", "IoError",
                 "NotFoundError", "ProtocolError", "ClosedError"):
        assert issubclass(getattr(r1, name), r1.R1Error), name
    assert issubclass(r1.R1Error, Exception)
    # Python conventions kept: catchable as the builtin families too.
    assert issubclass(r1.DaemonNotFound, ConnectionError)
    assert issubclass(r1.Timeout, TimeoutError)
    assert issubclass(r1.InvalidArgument, ValueError)
    assert issubclass(r1.IoError, OSError)
    assert issubclass(r1.NotFoundError, FileNotFoundError)
    assert issubclass(r1.NotFoundError, r1.IoError)
    for name in ("R1Error", "RpcError", "Timeout", "InvalidArgument"):
        assert getattr(r1, name).__module__ == "r1"
    # Class-level defaults exist, so handlers can read them on any instance.
    assert r1.RpcError.code == -32603 and r1.RpcError.message == ""
    assert r1.R1Error.data is None and r1.JournalCorrupt.report is None


def test_stubs_and_marker_are_installed() -> None:
    pkg = Path(r1.__file__).parent
    assert (pkg / "py.typed").exists()
    stub = (pkg / "_r1.pyi").read_text()
    for name in PUBLIC:
        assert name in stub, name


def test_classes_are_not_constructible_by_hand() -> None:
    import pytest

    for cls in (r1.Client, r1.Discovery, r1.Daemon, r1.Subscription, r1.JournalFollow):
        with pytest.raises(TypeError):
            cls()

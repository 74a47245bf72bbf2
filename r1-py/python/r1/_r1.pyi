"""Type stubs for r1._r1, the compiled part of the ``r1`` package (re-exported by ``r1``).

Checked against the built module by ``python -m mypy.stubtest r1`` (scripts/test-python.sh).
"""

import os
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, final

from typing_extensions import Self, TypeAlias

#: A value as _JSON holds it, converted to Python: dict, list, str, int, float, bool or None.
_JSON: TypeAlias = Any
#: A path given as ``str`` or ``os.PathLike``.
_StrPath: TypeAlias = str | os.PathLike[str]

__version__: str
"""The r1 version this package was built from."""

__all__ = [
    "AuthError",
    "Client",
    "ClosedError",
    "Daemon",
    "DaemonNotFound",
    "Discovery",
    "InvalidArgument",
    "IoError",
    "Journal",
    "JournalCorrupt",
    "JournalFollow",
    "NotFoundError",
    "ProtocolError",
    "R1Error",
    "RpcError",
    "Subscription",
    "Timeout",
    "UnsafeDiscovery",
    "__version__",
    "_error_for_kind",
    "_panic",
    "_stop_all_daemons",
    "dial",
    "discover",
]

# ----------------------------------------------------------------------------- errors

class R1Error(Exception):
    """Base class of every error r1 raises.

    ``kind`` is the r1 error kind (``not_found``, ``io``, ``conflict``, ...); ``data``
    is structured detail or ``None``.
    """

    kind: str
    data: _JSON

class DaemonNotFound(R1Error, ConnectionError):
    """No daemon could be found or reached (missing or stale discovery, spawn failed)."""

class UnsafeDiscovery(R1Error):
    """A file or directory r1 owns has an owner or mode r1 must not trust."""

class AuthError(R1Error):
    """Missing, wrong, expired or insufficiently scoped credentials."""

class RpcError(R1Error):
    """The daemon answered a call with a _JSON-RPC error (``code``, ``message``, ``data``)."""

    code: int
    message: str

class JournalCorrupt(R1Error):
    """A journal has a bad line; ``report`` holds the verify() report when raised by it."""

    report: dict[str, Any] | None

class Timeout(R1Error, TimeoutError):
    """An operation did not finish within its timeout."""

class InvalidArgument(R1Error, ValueError):
    """An argument r1 cannot use (not _JSON-serialisable, out of range, refused)."""

class IoError(R1Error, OSError):
    """A file or socket operation failed; the message names the path."""

class NotFoundError(IoError, FileNotFoundError):
    """A file r1 was asked to open does not exist."""

class ProtocolError(R1Error):
    """The peer speaks something this build does not understand (or a newer version)."""

class ClosedError(R1Error):
    """The client, subscription, connection or journal was closed."""

def _error_for_kind(kind: str, message: str, code: int | None = None) -> R1Error:
    """Test hook: the exception r1 raises for an error of ``kind``."""

def _panic(message: str) -> None:
    """Test hook: a Rust panic inside the panic boundary (raises R1Error)."""

# -------------------------------------------------------------------------- discovery

@final
class Discovery:
    """The parsed, validated contents of a daemon's ``daemon.json``; repr() hides the token."""

    @property
    def pid(self) -> int:
        """The daemon's process id."""
    @property
    def version(self) -> str:
        """The daemon's r1 version."""
    @property
    def protocol_version(self) -> int:
        """The _JSON-RPC protocol version it speaks."""
    @property
    def instance_id(self) -> str:
        """A fresh 128-bit hex id per daemon start."""
    @property
    def sock_path(self) -> str | None:
        """The unix socket path (None with --no-unix)."""
    @property
    def host(self) -> str | None:
        """The loopback host (None with --no-tcp)."""
    @property
    def port(self) -> int | None:
        """The loopback port (None with --no-tcp)."""
    @property
    def token(self) -> str:
        """The master bearer token: keep it secret."""
    @property
    def started_at(self) -> str:
        """RFC 3339 UTC start time."""
    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain dict (including ``token``)."""
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

def discover(home: _StrPath | None = None) -> Discovery:
    """Reads and validates the discovery file of ``home``; never spawns or connects."""

# ----------------------------------------------------------------------------- client

def dial(
    home: _StrPath | None = None,
    spawn: bool = True,
    timeout: float = 2.0,
    sock_path: _StrPath | None = None,
    *,
    port: int | None = None,
    token: str | None = None,
    host: str = "127.0.0.1",
    call_timeout: float = 30.0,
    reconnect_for: float = 60.0,
    client_name: str | None = None,
) -> Client:
    """Connects to the daemon of ``home``, starting one when allowed and none runs."""

@final
class Client:
    """A thread-safe connection to the r1 daemon; a context manager."""

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        timeout: float | None = None,
    ) -> _JSON:
        """Calls any _JSON-RPC method and returns its result."""
    def hello(self) -> dict[str, Any]:
        """``daemon.hello``."""
    def info(self) -> dict[str, Any]:
        """``daemon.info``."""
    def sessions(self, state: str | None = None) -> list[dict[str, Any]]:
        """``session.list``: every session (only those in ``state`` when given)."""
    def get(self, session_id: str) -> dict[str, Any]:
        """``session.get``."""
    def start(
        self,
        workdir: _StrPath,
        driver: str = "shell",
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """``session.start``: a session in ``workdir``."""
    def send(self, session_id: str, text: str) -> int:
        """``session.send``: queues input; returns its seq once it is on disk."""
    def pause(self, session_id: str) -> dict[str, Any]:
        """``session.pause``."""
    def resume(self, session_id: str) -> dict[str, Any]:
        """``session.resume``."""
    def cancel(self, session_id: str, reason: str | None = None) -> dict[str, Any]:
        """``session.cancel``: ends the session."""
    def delete(self, session_id: str) -> dict[str, Any]:
        """``session.delete``: cancels if needed and removes the journal."""
    def read(
        self, session_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """``journal.read``: records with seq > since_seq (all pages unless ``limit``)."""
    def follow(
        self, session_id: str, since_seq: int | None = 0, timeout: float | None = None
    ) -> Subscription:
        """``session.subscribe``: records as they happen; ends after ``session.ended``."""
    def events(
        self, since_seq: int | None = None, timeout: float | None = None
    ) -> Subscription:
        """``daemon.subscribe``: the daemon's bus."""
    def unsubscribe(self, sub: int) -> dict[str, Any]:
        """``session.unsubscribe``."""
    def shutdown(self, grace_s: float | None = None) -> dict[str, Any]:
        """``daemon.shutdown``: graceful stop."""
    def mint_token(self, scope: str, ttl_s: int = 3600) -> dict[str, Any]:
        """``daemon.mint_token``: a scoped bearer token for HTTP/WebSocket."""
    def rotate_token(self) -> dict[str, Any]:
        """``daemon.rotate_token``: replaces the master token."""
    def discover_methods(self) -> dict[str, Any]:
        """``rpc.discover``: the OpenRPC document of every method."""
    @property
    def handshake(self) -> dict[str, Any]:
        """The ``daemon.hello`` answer of the current connection."""
    @property
    def discovery(self) -> Discovery | None:
        """The discovery file the connection was found through."""
    def close(self) -> None:
        """Closes the client and every iterator made from it."""
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

@final
class Subscription:
    """A stream of a session's records (``Client.follow``) or of the bus (``Client.events``)."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> dict[str, Any]: ...
    @property
    def reply(self) -> dict[str, Any]:
        """The daemon's answer to the subscribe."""
    def close(self) -> None:
        """Stops the stream, from any thread."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

# ---------------------------------------------------------------------------- journal

@final
class Journal:
    """A session journal read directly from disk; iterable of record dicts."""

    def __new__(cls, path: _StrPath) -> Self: ...
    @property
    def path(self) -> str:
        """The journal's path."""
    def since(self, seq: int) -> Self:
        """Repositions so the next record has seq > ``seq``; returns self."""
    def __iter__(self) -> Self: ...
    def __next__(self) -> dict[str, Any]: ...
    def verify(self) -> dict[str, Any]:
        """Full scan; the report, or JournalCorrupt carrying it."""
    def follow(self, timeout: float | None = None) -> JournalFollow:
        """Records from the current position on, waiting for new ones."""
    def close(self) -> None:
        """Closes the file."""
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

@final
class JournalFollow:
    """The iterator returned by :meth:`Journal.follow`."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> dict[str, Any]: ...

# ----------------------------------------------------------------------------- daemon

def _stop_all_daemons() -> None:
    """Stops every embedded daemon still running (registered with atexit)."""

@final
class Daemon:
    """An r1 daemon running inside this Python process; a context manager."""

    @staticmethod
    def start(
        home: _StrPath | None = None,
        *,
        sock_path: _StrPath | None = None,
        unix: bool = True,
        tcp: bool = True,
        port: int = 0,
        single_session: bool = False,
        allow_origins: Sequence[str] | None = None,
        fsync_interval_ms: float = 100.0,
        idle_exit_s: float | None = None,
        shutdown_grace_s: float = 5.0,
        token: str | None = None,
    ) -> Daemon:
        """Starts a daemon; returns once it accepts connections."""
    def stop(self) -> None:
        """Stops the daemon gracefully; idempotent."""
    @property
    def running(self) -> bool:
        """Whether the daemon is running."""
    @property
    def home(self) -> str:
        """The daemon's home directory."""
    @property
    def sock_path(self) -> str | None:
        """The unix socket path."""
    @property
    def port(self) -> int | None:
        """The loopback HTTP port."""
    @property
    def instance_id(self) -> str:
        """This start's instance id."""
    @property
    def discovery(self) -> Discovery:
        """What the daemon wrote to ``daemon.json``."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...

"""r1: a per-user session daemon, from Python.

Find the daemon with :func:`discover`, connect with :func:`dial` (which starts one
when none is running), drive sessions through :class:`Client`, read journals with
no daemon at all through :class:`Journal`, and embed a private daemon in a test
with :class:`Daemon`.

Every error r1 raises is an :class:`R1Error`; see its subclasses for what failed.
"""

import atexit

from . import _r1
from ._r1 import (
    AuthError,
    Client,
    ClosedError,
    Daemon,
    DaemonNotFound,
    Discovery,
    InvalidArgument,
    IoError,
    Journal,
    JournalCorrupt,
    JournalFollow,
    NotFoundError,
    ProtocolError,
    R1Error,
    RpcError,
    Subscription,
    Timeout,
    UnsafeDiscovery,
    __version__,
    dial,
    discover,
)

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
    "dial",
    "discover",
]

# Embedded daemons still referenced at exit are stopped gracefully (discovery
# removed, journals marked clean) instead of vanishing with the process.
atexit.register(_r1._stop_all_daemons)

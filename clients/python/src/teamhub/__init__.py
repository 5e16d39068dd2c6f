"""teamhub: a Python client for the teamhub collaboration hub.

- :class:`Client`: the asyncio WebSocket client (join with ``since``, publish, live
  presence, an async iterator of events, reconnect with full-jitter backoff that
  rejoins every team and reports per team whether it recovered).
- :class:`Rest`: the REST API (history, activity pages and streamed exports, API keys,
  member revocation, patterns).
- :class:`PatternLibrary`: a local copy of a team's pattern library kept in sync.
- ``teamhub.sync``: the same for scripts, without ``async``.
- ``python -m teamhub patterns pull|push|watch``: the command line.

docs/clients.md in the teamhub repository is the guide.
"""

from ._version import __version__
from .backoff import Backoff, backoff_delay
from .client import Client
from .errors import (
    BadRequest,
    ClientClosed,
    ClientStopped,
    Conflict,
    ConnectionLost,
    ExportIncomplete,
    Forbidden,
    Internal,
    NotConnected,
    NotFound,
    PreconditionRequired,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    TeamhubError,
    TlsError,
    TlsStopped,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .events import (
    Connected,
    Disconnected,
    Event,
    EventStream,
    Joined,
    Kicked,
    Message,
    PresenceChanged,
    Reconnected,
    RejoinResult,
    ServerError,
    Stopped,
    TokenRefreshed,
)
from .patterns import (
    TAKE_THEIRS,
    JsonFileStore,
    LibraryState,
    MemoryStore,
    PatternChange,
    PatternConflict,
    PatternConflictError,
    PatternLibrary,
    PatternStore,
)
from .protocol import (
    ActivityRow,
    ApiKey,
    CreatedApiKey,
    History,
    JoinReply,
    MessageFrame,
    Pattern,
    PatternFeed,
    PresenceEntry,
    Revocation,
    Since,
    close_advice,
)
from .rest import ActivityPage, Rest
from .state import Positions, PresenceChange, PresenceMap
from .tls import TlsLike, ssl_context
from .tokens import TokenProvider, TokenSource

__all__ = [
    "TAKE_THEIRS",
    "ActivityPage",
    "ActivityRow",
    "ApiKey",
    "Backoff",
    "BadRequest",
    "Client",
    "ClientClosed",
    "ClientStopped",
    "Conflict",
    "Connected",
    "ConnectionLost",
    "CreatedApiKey",
    "Disconnected",
    "Event",
    "EventStream",
    "ExportIncomplete",
    "Forbidden",
    "History",
    "Internal",
    "JoinReply",
    "Joined",
    "JsonFileStore",
    "Kicked",
    "LibraryState",
    "MemoryStore",
    "Message",
    "MessageFrame",
    "NotConnected",
    "NotFound",
    "Pattern",
    "PatternChange",
    "PatternConflict",
    "PatternConflictError",
    "PatternFeed",
    "PatternLibrary",
    "PatternStore",
    "Positions",
    "PreconditionRequired",
    "PresenceChange",
    "PresenceChanged",
    "PresenceEntry",
    "PresenceMap",
    "QuotaExceeded",
    "RateLimited",
    "Reconnected",
    "RejoinResult",
    "RequestTimeout",
    "Rest",
    "Revocation",
    "ServerError",
    "Since",
    "Stopped",
    "TeamhubError",
    "TlsError",
    "TlsLike",
    "TlsStopped",
    "TokenProvider",
    "TokenRefreshed",
    "TokenSource",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "__version__",
    "backoff_delay",
    "close_advice",
    "ssl_context",
]

"""Exceptions, one class per error code of the wire contract.

Every error the hub reports, in an ``error`` frame or a REST error body, carries a
``code`` (``bad_request``, ``forbidden``, ...); :func:`error_for` turns it into the
matching class, so callers can ``except Forbidden`` or look at ``err.code``. Errors the
client itself decides (the socket closed, a request timed out, the client stopped)
have codes of their own, as the browser library's ``TeamhubError`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import Pattern


class TeamhubError(Exception):
    """An error with the contract's ``code``.

    ``status`` is the HTTP status for REST errors (and refused handshakes), ``id`` the
    request id of the frame an ``error`` frame answered, when there was one.
    """

    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        id: int | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.status = status
        self.id = id

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.code}: {self.message}{where}"


class BadRequest(TeamhubError):
    """The request is malformed: fix it, do not retry it."""

    code = "bad_request"


class Unauthorized(TeamhubError):
    """The token is missing, malformed, expired or badly signed."""

    code = "unauthorized"


class Forbidden(TeamhubError):
    """The token's role does not allow it (or the message type is reserved)."""

    code = "forbidden"


class NotFound(TeamhubError):
    code = "not_found"


class RateLimited(TeamhubError):
    """Not acted on; slow down. ``retry_after`` in seconds when the hub said."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class TooLarge(TeamhubError):
    code = "too_large"


class Unavailable(TeamhubError):
    """A backing service is down, or the client is not connected: retry later."""

    code = "unavailable"


class Internal(TeamhubError):
    code = "internal"


class QuotaExceeded(TeamhubError):
    code = "quota_exceeded"


class PreconditionRequired(TeamhubError):
    code = "precondition_required"


class Conflict(TeamhubError):
    """A 409: the precondition failed. ``current`` is what is stored now, if sent."""

    code = "conflict"

    def __init__(self, message: str, *, current: Pattern | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.current = current


# Errors of the client's own making.


class NotConnected(Unavailable):
    """No open connection to send on (within the wait allowed)."""


class ConnectionLost(TeamhubError):
    """The socket closed before the answer came: the request may or may not have been
    acted on."""

    code = "closed"


class RequestTimeout(TeamhubError):
    code = "timeout"


class ClientClosed(TeamhubError):
    """The client was closed by its owner."""

    code = "closed"


class ClientStopped(TeamhubError):
    """The client gave up, as the close code or handshake status advises (401/403 at
    the handshake, close 4001 without a way to get a new token, 1002, 1007, 1008, 1009,
    4008, a TLS certificate that does not verify: ``TlsStopped``).

    ``close_code`` is the WebSocket close code, or the HTTP status of a refused
    handshake (1015 for a TLS failure, as RFC 6455 names it).
    """

    code = "closed"

    def __init__(self, message: str, *, close_code: int | None, code: str, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        self.close_code = close_code


class TlsError(TeamhubError):
    """The node's TLS certificate does not verify (an unknown or private CA, expired,
    issued for another host). It will not verify on the next attempt either, so it is
    never retried: give the node's CA with ``ssl=`` (a PEM file or an
    ``ssl.SSLContext``), or fix the URL."""

    code = "tls"


class TlsStopped(ClientStopped, TlsError):
    """The ``Client`` stopped because the node's certificate does not verify: both a
    ``ClientStopped`` and a ``TlsError``, so either ``except`` catches it."""


class ExportIncomplete(Unavailable):
    """A streamed export broke off before its end (the hub's database failed mid-way):
    what was received is not the whole export."""


_BY_CODE: dict[str, type[TeamhubError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        RateLimited,
        TooLarge,
        Unavailable,
        Internal,
        QuotaExceeded,
        PreconditionRequired,
        Conflict,
    )
}


def error_for(
    code: str,
    message: str,
    *,
    status: int | None = None,
    id: int | None = None,
) -> TeamhubError:
    """The exception for a contract error code (an unknown code keeps its text)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return TeamhubError(message, code=code, status=status, id=id)
    return cls(message, status=status, id=id)

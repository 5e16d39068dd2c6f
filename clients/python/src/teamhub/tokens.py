"""Where tokens come from: a fixed string, or a callable that returns a fresh one.

A callable (plain or async) is called for the first token, again shortly before a
JWT's ``exp`` (the client then sends ``refresh``), after a close 4001, and after a 401.
A fixed token cannot be renewed: when the hub refuses it, the client stops.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from .errors import Unauthorized
from .protocol import jwt_exp

TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
TokenLike: TypeAlias = "str | TokenProvider | TokenSource"


class TokenSource:
    """The current token, and a way to get a new one. Shared by a ``Client`` and a
    ``Rest`` so a refresh on one is used by the other."""

    def __init__(self, token: str | TokenProvider) -> None:
        if isinstance(token, str):
            if not token:
                raise ValueError("empty token")
            self._current: str | None = token
            self._provider: TokenProvider | None = None
        elif callable(token):
            self._current = None
            self._provider = token
        else:
            raise TypeError("token must be a string or a callable returning one")
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, token: str | TokenProvider | TokenSource) -> TokenSource:
        return token if isinstance(token, TokenSource) else cls(token)

    @property
    def renewable(self) -> bool:
        return self._provider is not None

    @property
    def current(self) -> str | None:
        return self._current

    def set(self, token: str) -> None:
        """Makes ``token`` the current one (say, after ``Client.refresh(token)``)."""
        if not token:
            raise ValueError("empty token")
        self._current = token

    def expires_at(self) -> float | None:
        return jwt_exp(self._current) if self._current else None

    async def get(self) -> str:
        """The current token, fetched first when there is none yet or a renewable one
        has expired (or will within a second)."""
        current = self._current
        if current is not None:
            exp = jwt_exp(current)
            if self._provider is None or exp is None or exp > time.time() + 1:
                return current
        return await self.renew(current)

    async def renew(self, stale: str | None = None) -> str:
        """A new token from the provider. Concurrent callers share one call: whoever
        passes the token it found stale gets the one a concurrent renewal fetched."""
        if self._provider is None:
            raise Unauthorized("the token was refused and no token provider was given")
        async with self._lock:
            if stale is not None and self._current is not None and self._current != stale:
                return self._current
            value = self._provider()
            token = await value if inspect.isawaitable(value) else value
            if not isinstance(token, str) or not token:
                raise TypeError("the token provider must return a non-empty string")
            self._current = token
            return token

"""Who a ``wss://`` or ``https://`` connection trusts, and telling a certificate that
does not verify (never retried: it will not verify next time either) from network
trouble (retried).

One ``ssl.SSLContext`` serves the socket (websockets) and REST (httpx) alike, so both
trust the same roots: the system's by default (as websockets and the Rust client do),
only the CA certificates of a PEM file (a private CA), or a context the caller built.
"""

from __future__ import annotations

import os
import ssl
from typing import TypeAlias

TlsLike: TypeAlias = "ssl.SSLContext | str | os.PathLike[str]"
"""What ``ssl=`` takes: a ready context, or the path of a PEM file of CA certificates."""

_PEM_CERT = "-----BEGIN CERTIFICATE-----"


def ssl_context(tls: TlsLike | None) -> ssl.SSLContext:
    """The context for ``tls``: itself, one trusting only the CA certificates of a PEM
    file, or (``None``) one trusting the system's roots. A CA file that is missing or
    holds no certificate is a ``ValueError`` here, not a TLS failure later."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is None:
        return ssl.create_default_context()
    if not isinstance(tls, str | os.PathLike):
        raise TypeError(f"ssl= takes an ssl.SSLContext or a CA file path, not {type(tls).__name__}")
    path = os.fspath(tls)
    try:
        with open(path, encoding="utf-8") as f:
            pem = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"CA file {path}: cannot read it ({e})") from e
    if _PEM_CERT not in pem:
        raise ValueError(f"CA file {path}: no PEM certificate in it (want {_PEM_CERT} ...)")
    try:
        # cadata alone: the system's roots are not added, as with the Rust client.
        return ssl.create_default_context(cadata=pem)
    except ssl.SSLError as e:
        raise ValueError(f"CA file {path}: not a usable CA certificate ({e})") from e


def verify_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate-verification error behind ``exc``, if that is what it is (httpx
    wraps it twice; websockets raises it as it is)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, ssl.SSLCertVerificationError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def describe(err: ssl.SSLCertVerificationError, url: str) -> str:
    """A message that says what failed and what to do about it."""
    why = err.verify_message or err.reason or str(err)
    return (
        f"TLS: the certificate of {url} does not verify ({why}); not retrying. For a private "
        "CA pass it as ssl= (a PEM file or an ssl.SSLContext), or --ca-cert on the command line"
    )

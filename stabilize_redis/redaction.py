"""Hiding credentials in connection strings before they reach a log line or a terminal.

``redact`` takes a Redis URL (``redis://``, ``rediss://``, ``unix://``) or a PostgreSQL DSN
(``postgresql://`` URL or libpq ``key=value`` string) and returns it with every secret replaced
by ``***``:

- the password of the URL's user info (``user:pass@`` and ``:pass@``; the user name stays),
- every query parameter whose name mentions a password, secret or token (``?password=``,
  ``&password=``, ``ssl_password``, ``ssl_keyfile_password``, ``sslpassword``, ``auth_token``,
  ``client_secret``, ...),
- in a libpq ``key=value`` string, the value of every such key (quoted or not).

Everything else (scheme, host, port, database, CA paths, user name) stays, so the line still
says where the process connects. The function never raises: anything it cannot parse comes back
with the same substitutions applied, never with less hidden.
"""

from __future__ import annotations

import re

MASK = "***"

_SECRET_NAME = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_KV_SECRET = re.compile(
    r"(?P<key>\b[\w.-]*(?:pass|pwd|secret|token)[\w.-]*\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'?|\S+)",
    re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for a parameter name that names a password, secret or token."""
    return bool(_SECRET_NAME.search(name))


def redact(value: str) -> str:
    """``value`` (a Redis URL or a PostgreSQL DSN in any form) with every credential masked."""
    scheme = _SCHEME.match(value)
    if scheme is None:
        return _KV_SECRET.sub(lambda m: m.group("key") + MASK, value)
    head, rest = value[:scheme.end()], value[scheme.end():]
    rest = _redact_userinfo(rest)
    start = rest.find("?")
    if start < 0:
        return head + rest
    return head + rest[:start + 1] + _redact_query(rest[start + 1:])


def _redact_userinfo(rest: str) -> str:
    """``rest`` (the URL after ``scheme://``) with the password of its user info masked.

    The user info ends at the last ``@`` before the first ``/`` (as libpq and urllib read it);
    failing that, at the last ``@`` before the query, so that an unencoded ``/`` in a password
    still hides it."""
    slash = rest.find("/")
    at = rest.rfind("@", 0, slash if slash >= 0 else len(rest))
    if at < 0:
        query = rest.find("?")
        at = rest.rfind("@", 0, query if query >= 0 else len(rest))
    if at < 0:
        return rest
    userinfo, host = rest[:at], rest[at:]
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}{host}" if colon else rest


def _redact_query(query: str) -> str:
    """A URL query string with the value of every secret-named parameter masked (up to the
    next ``&``: a ``#`` in a value is part of the secret, not a fragment)."""
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and is_secret_name(name) else part)
    return "&".join(parts)

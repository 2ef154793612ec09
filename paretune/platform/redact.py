"""Credentials kept out of what paretune prints, logs or writes: :func:`redact_uri`."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "***"
# Query parameters of a URI that carry a secret (``?password=...``, ``?token=...``).
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "token", "secret", "access_token"})


def redact_uri(uri: str) -> str:
    """``uri`` with its password (``user:password@``) and secret query values replaced by ``***``.

    ``postgresql://user:pass@host/db`` becomes ``postgresql://user:***@host/db``; a URI without
    credentials (``sqlite:///m.db``, ``http://host:5000``) comes back unchanged.
    """
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
            pairs = [(k, REDACTED if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
            query = urlencode(pairs, safe="*")
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str, uri: str) -> str:
    """``text`` (an error message) with the secrets of ``uri`` replaced by ``***``."""
    shown = redact_uri(uri)
    if shown == uri:
        return text
    text = text.replace(uri, shown)
    try:
        parts = urlsplit(uri)
        secrets = [parts.password] if parts.password else []
        secrets += [v for k, v in parse_qsl(parts.query) if k.lower() in SECRET_QUERY_KEYS and v]
    except ValueError:
        return text
    for secret in {s for v in secrets for s in (v, unquote(v))}:
        if len(secret) >= 3:  # shorter would blank out ordinary words of the message
            text = text.replace(secret, REDACTED)
    return text

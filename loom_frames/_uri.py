"""MongoDB URIs: what may be shown of them, and the secrets that never may.

pymongo splits a URI at the first ``?``, then at the first ``/``, then takes everything
before the LAST ``@`` as ``user:password``. A password with an unescaped ``?``, ``/``,
``:`` or ``@`` breaks those rules (pymongo then rejects the URI, or reads part of the
password as a host or a database): the secret is still in the text. So the user info
is found by pymongo's rules when they give a well-formed URI, and otherwise (or when an
``@`` followed by a host list appears in the path, where pymongo saw no user info)
everything up to the last ``@`` that precedes a host list is treated as user info. Over-redacting a
malformed URI is the price of never printing a password.

One shape stays ambiguous: ``mongodb://bob:12?a=b@host`` is, by pymongo's rules, host
``bob`` port 12 with an option ``a=b@host`` (exactly like ``mongodb://h:1/?appname=a@b``),
so a password of digits, then ``?``, then ``key=value`` text is not recognised.

Sensitive options (pymongo's own list: ``tlsCertificateKeyFilePassword``,
``proxyPassword``, ...) have their values redacted; ``authMechanismProperties`` keeps
only the properties pymongo itself shows in a client's repr (``SERVICE_NAME``, ...).

>>> redact_uri("mongodb://bob:pa?ss@db.example.com:27017/app?tls=true")
'mongodb://bob:***@db.example.com:27017/app?tls=true'
>>> redact_uri("mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:abc,SERVICE_NAME:x")
'mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:***,SERVICE_NAME:x'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from pymongo import common

__all__ = ["UriParts", "option", "redact_uri", "scrub", "split_uri"]

MASK = "***"

_SENSITIVE = frozenset(
    {*common.SENSITIVE_OPTIONS_FOR_REPR, "tlscertificatekeyfilepassword", "proxypassword",
     "proxyusername", "sslpemkeypassword", "ssl_pem_passphrase", "password"}
)
_SAFE_AUTH_PROPERTIES = frozenset(
    getattr(common, "_SAFE_AUTH_MECHANISM_PROPS_FOR_REPR", {"SERVICE_NAME", "SERVICE_REALM"})
)
_HOST = r"(?:\[[0-9A-Fa-f:.]+(?:%25[^\]/?@]*)?\]|[A-Za-z0-9._~%\-]+)(?::\d{1,5})?"
_HOSTS = re.compile(rf"{_HOST}(?:,{_HOST})*")
_BOUNDARY = re.compile(rf"@(?={_HOST}(?:,{_HOST})*(?:[/?]|$))")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_DB_BAD = re.compile(r'[/ "$]')
_MIN_SCRUB = 3  # shorter secrets are not searched for in free text (they would garble it)


@dataclass(frozen=True, slots=True)
class UriParts:
    """A URI cut where its secrets are: ``scheme`` + user info + ``@`` + ``rest``."""

    scheme: str
    user: str | None  # the user name as shown (None: no user info, or it cannot be told)
    has_userinfo: bool
    rest: str  # hosts, then optionally /database and ?options (still raw)
    secrets: tuple[str, ...]  # raw and decoded forms of the password and secret options
    well_formed: bool  # pymongo's own rules split it cleanly (no secret in odd places)

    @property
    def options(self) -> list[tuple[str, str]]:
        """The ``key=value`` options (raw text, as written)."""
        query = self.rest.partition("?")[2]
        pairs = []
        for item in re.split(r"[&;]", query) if query else []:
            key, _, value = item.partition("=")
            pairs.append((key, value))
        return pairs


def split_uri(uri: str) -> UriParts:
    """Find the user info and the secret options of ``uri`` (never raises)."""
    scheme_match = _SCHEME.match(uri)
    scheme = scheme_match.group(0) if scheme_match else ""
    body = uri[len(scheme):]
    head, _, query = body.partition("?")
    host_db, _, database = head.partition("/")
    userinfo, at, hosts = host_db.rpartition("@")
    well_formed = bool(scheme_match) and _pymongo_accepts(userinfo if at else None, hosts,
                                                          database, query)
    boundaries = [found.start() for found in _BOUNDARY.finditer(body)]
    in_head = [position for position in boundaries if position < len(head)]
    pymongo_split = len(userinfo) if at else -1
    if well_formed and in_head and in_head[-1] > pymongo_split:
        # pymongo sees no (or a shorter) user info, yet an "@" before the options is
        # followed by a host list: "user:pa/ss@host" (an "@" among options is a value)
        split_at, well_formed = in_head[-1], False
    elif well_formed:
        split_at = pymongo_split
    elif boundaries:
        split_at = boundaries[-1]
    else:
        split_at = body.rfind("@")
    if split_at < 0:
        user_info, rest = None, body
    else:
        user_info, rest = body[:split_at], body[split_at + 1:]
    secrets: list[str] = []
    user = None
    if user_info is not None:
        name, colon, password = user_info.partition(":")
        if colon and not re.search(r"[/?#@\[\]]", name):
            user = unquote_plus(name)
            secrets += [password, unquote_plus(password), unquote(password)]
        else:
            secrets += [user_info, unquote_plus(user_info)]
    for key, value in UriParts(scheme, None, False, rest, (), True).options:
        secrets += _option_secrets(key, value)
    return UriParts(scheme, user, user_info is not None, rest,
                    tuple(s for s in dict.fromkeys(secrets) if s), well_formed)


def _pymongo_accepts(userinfo: str | None, hosts: str, database: str, query: str) -> bool:
    if userinfo is not None and ("@" in userinfo or userinfo.count(":") > 1
                                 or re.search(r"%(?![0-9A-Fa-f]{2})", userinfo)):
        return False
    if not _HOSTS.fullmatch(hosts):
        return False
    if database and _DB_BAD.search(unquote_plus(database.partition(".")[0])):
        return False
    return all("=" in item for item in re.split(r"[&;]", query)) if query else True


def _option_secrets(key: str, value: str) -> list[str]:
    name = key.lower()
    if name in _SENSITIVE:
        return [value, unquote_plus(value)]
    if name == "authmechanismproperties":
        out = []
        for prop in unquote_plus(value).split(","):
            prop_key, _, prop_value = prop.partition(":")
            if prop_key.upper() not in _SAFE_AUTH_PROPERTIES:
                out.append(prop_value)
        return out
    return []


def _redact_option(item: str) -> str:
    key, _, value = item.partition("=")
    name = key.lower()
    if name in _SENSITIVE:
        return f"{key}={MASK}"
    if name == "authmechanismproperties":
        props = []
        for prop in unquote_plus(value).split(","):
            prop_key, colon, prop_value = prop.partition(":")
            shown = prop_value if prop_key.upper() in _SAFE_AUTH_PROPERTIES else MASK
            props.append(f"{prop_key}{colon}{shown}" if colon else MASK)
        return f"{key}={','.join(props)}"
    return item


def redact_uri(uri: str) -> str:
    """The URI with its password and secret options replaced by ``***``.

    >>> redact_uri("mongodb://bob:s3cret@localhost:27017/")
    'mongodb://bob:***@localhost:27017/'
    >>> redact_uri("mongodb://bob:p@ss/word@localhost/")
    'mongodb://bob:***@localhost/'
    """
    if not isinstance(uri, str):
        return f"<{type(uri).__name__}, not a URI string>"
    parts = split_uri(uri)
    base, question, query = parts.rest.partition("?")
    rest = base + question + re.sub(r"[^&;]+", lambda m: _redact_option(m.group(0)), query)
    if not parts.has_userinfo:
        return parts.scheme + rest
    shown = f"{parts.user}:{MASK}" if parts.user is not None else MASK
    return f"{parts.scheme}{shown}@{rest}"


def scrub(text: str, *uris: str | None) -> str:
    """``text`` with every secret of ``uris`` (and the URIs themselves) masked."""
    for uri in uris:
        if not uri:
            continue
        text = text.replace(uri, redact_uri(uri))
        for secret in sorted(split_uri(uri).secrets, key=len, reverse=True):
            if len(secret) >= _MIN_SCRUB:
                text = text.replace(secret, MASK)
    return text


def option(uri: str, name: str) -> str | None:
    """The decoded value of option ``name`` (case-insensitive), or None.

    >>> option("mongodb://h/?tlsCAFile=%2Fetc%2Fca.pem", "tlscafile")
    '/etc/ca.pem'
    """
    for key, value in split_uri(uri).options:
        if key.lower() == name.lower():
            return unquote_plus(value)
    return None

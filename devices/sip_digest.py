"""SIP digest authentication, sans-I/O (RFC 3261 §22.4 on RFC 2617; RFC 7616 for SHA-256).

The server's side: :func:`challenge` writes a ``WWW-Authenticate`` value with a stateless nonce (its
issue time, a tag of the request body it answers, and an HMAC of both under the receiver's secret, so
any node of the bridge can check it and it expires after :data:`NONCE_TTL_S`); :func:`check` verifies an
``Authorization`` value against the unit's password. The client's side (simulators, tests):
:func:`authorization`.

Replays. ``qop=auth`` signs the method and URI, not the body: a captured ``Authorization`` could carry
any other alarm for the same unit while its nonce lives. So a nonce is bound to the body it was issued
for (``bound``): the same ``Authorization`` on another body is answered ``stale`` (a new challenge, for
this body; an honest unit simply answers it). The very same request replayed (same nonce, ``nc`` and
``cnonce``) is caught by a :class:`NonceLedger` on the node that saw it first, also answered ``stale``;
on another node it collapses onto the same alert anyway (the same body is the same event id).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

#: How long a nonce is accepted, seconds.
NONCE_TTL_S = 300
_ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class Verdict(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no Authorization for our realm: challenge
    STALE = "stale"  # a good answer to an expired nonce: challenge with stale=true
    WRONG = "wrong"  # bad response, user or parameters: challenge (and count)


@dataclass(frozen=True, slots=True)
class Digest:
    """The parameters of one ``Authorization: Digest ...`` (names lower case, quotes removed)."""

    params: dict[str, str]

    def get(self, name: str) -> str:
        return self.params.get(name, "")


def parse_digest(value: str) -> Digest | None:
    """An ``Authorization``/``WWW-Authenticate`` Digest value, or None when it is not one."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,\t":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            out: list[str] = []
            i += 1
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(rest[i])
                i += 1
            i += 1
            params[name] = "".join(out)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[name] = rest[i:end].strip()
            i = end
    return Digest(params)


def _h(algorithm: str, text: str) -> str:
    return _ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest()


def _nonce_mac(secret: bytes, issued: str) -> str:
    return hmac.new(secret, issued.encode("ascii"), hashlib.sha256).hexdigest()[:32]


def body_tag(bound: bytes) -> str:
    """The tag of a request body a nonce is bound to."""
    return hashlib.sha256(bound).hexdigest()[:16]


def new_nonce(secret: bytes, now: float, bound: bytes = b"") -> str:
    """``<issued>.<body tag>.<mac>``: good for the body ``bound`` until :data:`NONCE_TTL_S` after ``now``."""
    stamped = f"{int(now):x}.{body_tag(bound)}"
    return f"{stamped}.{_nonce_mac(secret, stamped)}"


#: The most (nonce, nc, cnonce) a :class:`NonceLedger` remembers; beyond, the oldest are forgotten.
MAX_SEEN = 100_000


class NonceLedger:
    """The answers to our nonces seen lately: the same one again is a replay. Bounded: an entry lives
    as long as its nonce (:data:`NONCE_TTL_S`), at most :data:`MAX_SEEN` of them."""

    def __init__(self, *, max_seen: int = MAX_SEEN) -> None:
        self._max_seen = max_seen
        self._seen: dict[tuple[str, str, str], float] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, d: Digest, now: float) -> bool:
        """Record this answer; False when it was seen before (a replay)."""
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self._max_seen:
                break
            del self._seen[key]
        key = (d.get("nonce"), d.get("nc"), d.get("cnonce"))
        if key in self._seen:
            return False
        self._seen[key] = now + NONCE_TTL_S + 5
        return True


def challenge(
    realm: str,
    secret: bytes,
    now: float,
    *,
    stale: bool = False,
    algorithm: str = "MD5",
    bound: bytes = b"",
) -> str:
    """A ``WWW-Authenticate`` value asking for digest with qop=auth, its nonce bound to ``bound``."""
    parts = [
        f'realm="{realm}"',
        f'nonce="{new_nonce(secret, now, bound)}"',
        f"algorithm={algorithm}",
        'qop="auth"',
        f'opaque="{secrets.token_hex(4)}"',
    ]
    if stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def expected_response(d: Digest, password: str, method: str) -> str | None:
    """The response a client knowing ``password`` sends for these parameters (None: bad parameters)."""
    algorithm = d.get("algorithm") or "MD5"
    if algorithm not in _ALGORITHMS:
        return None
    ha1 = _h(algorithm, f"{d.get('username')}:{d.get('realm')}:{password}")
    ha2 = _h(algorithm, f"{method}:{d.get('uri')}")
    qop = d.get("qop")
    if qop == "auth":
        return _h(algorithm, f"{ha1}:{d.get('nonce')}:{d.get('nc')}:{d.get('cnonce')}:auth:{ha2}")
    if qop:
        return None  # auth-int is not offered
    return _h(algorithm, f"{ha1}:{d.get('nonce')}:{ha2}")


def check(
    value: str | None,
    *,
    username: str,
    password: str,
    realm: str,
    method: str,
    secret: bytes,
    now: float,
    uri: str | None = None,
    bound: bytes = b"",
    ledger: NonceLedger | None = None,
) -> Verdict:
    """Whether an ``Authorization`` value proves knowledge of ``password`` for ``username`` (and, when
    ``uri`` is given, was made for that Request-URI: RFC 2617 §3.2.2.5), with a nonce of ours issued
    for the body ``bound`` and, with a ``ledger``, not used before (either: STALE)."""
    d = parse_digest(value) if value else None
    if d is None or d.get("realm") != realm:
        return Verdict.MISSING
    want = expected_response(d, password, method)
    if d.get("username") != username or want is None or not hmac.compare_digest(want, d.get("response")):
        return Verdict.WRONG
    if uri is not None and d.get("uri") != uri:
        return Verdict.WRONG
    stamped, dot, mac = d.get("nonce").rpartition(".")
    issued, _, tag = stamped.partition(".")
    if not dot or not hmac.compare_digest(mac, _nonce_mac(secret, stamped)):
        return Verdict.WRONG
    try:
        age = now - int(issued, 16)
    except ValueError:
        return Verdict.WRONG
    if not -5 <= age <= NONCE_TTL_S or tag != body_tag(bound):
        return Verdict.STALE
    if ledger is not None and not ledger.first_use(d, now):
        return Verdict.STALE
    return Verdict.OK


def authorization(
    www_authenticate: str, *, username: str, password: str, method: str, uri: str, nc: int = 1
) -> str:
    """The client's ``Authorization`` value answering a challenge (qop=auth when offered)."""
    ch = parse_digest(www_authenticate)
    if ch is None:
        raise ValueError("not a Digest challenge")
    algorithm = ch.get("algorithm") or "MD5"
    cnonce = secrets.token_hex(8)
    qop = "auth" if "auth" in [q.strip() for q in ch.get("qop").split(",")] else ""
    mine = Digest(
        {
            "username": username,
            "realm": ch.get("realm"),
            "nonce": ch.get("nonce"),
            "uri": uri,
            "algorithm": algorithm,
            "qop": qop,
            "nc": f"{nc:08x}",
            "cnonce": cnonce,
        }
    )
    response = expected_response(mine, password, method)
    if response is None:
        raise ValueError(f"unsupported digest algorithm {algorithm}")
    parts = [
        f'username="{username}"',
        f'realm="{ch.get("realm")}"',
        f'nonce="{ch.get("nonce")}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc:08x}", f'cnonce="{cnonce}"']
    if ch.get("opaque"):
        parts.append(f'opaque="{ch.get("opaque")}"')
    return "Digest " + ", ".join(parts)

"""Password hashing (scrypt) and access tokens (JWT, HS256 only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from notifier import validation
from notifier.errors import InputError, InvalidToken

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
ALGORITHM = "HS256"


class Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A username and password, exchanged for a token (POST /api/token)."""

    username: validation.Text100
    password: Annotated[str, validation.must("is required and must be a string", min_length=1)]

    @classmethod
    def parse(cls, body: object) -> Credentials:
        """Read credentials from a JSON body; InputError naming the bad field."""
        given = validation.decode(cls, body)
        if len(given.password) > validation.PASSWORD_LENGTH:
            raise InputError(f"password must be at most {validation.PASSWORD_LENGTH} characters")
        name = validation.text(given.username, "username", validation.NAME_LENGTH)
        return msgspec.structs.replace(given, username=name)


@dataclass(frozen=True)
class Identity:
    """Who a valid token speaks for."""

    user_id: str
    username: str
    role: str
    expires_at: float
    version: int = 0  # the user's token version when it was issued (see revocation.py)

    @property
    def is_admin(self) -> bool:
        """True for users with the admin role."""
        return self.role == "admin"


def hash_password(password: str) -> str:
    """An scrypt hash with its parameters and salt, safe to store."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str | None) -> bool:
    """Check a password in constant time; a missing user still costs one scrypt."""
    try:
        _, n, r, p, salt, digest = (stored or _DUMMY_HASH).split("$")
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, _unb64(digest)) and stored is not None


def issue_token(
    secret: str, user_id: str, username: str, role: str, ttl: int, version: int = 0
) -> str:
    """A signed access token for a user, valid for ttl seconds, at its token version."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "username": username,
        "role": role,
        "iat": now,
        "exp": now + ttl,
        "ver": version,
    }
    import jwt  # see _issued_claims

    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(secret: str, token: str) -> Identity:
    """Verify a token and return who it speaks for; raise InvalidToken otherwise."""
    claims = _issued_claims(secret, token)
    if claims is None:
        import jwt  # see _issued_claims

        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
    sub, username, role = claims.get("sub"), claims.get("username"), claims.get("role", "shopper")
    version = claims.get("ver", 0)
    if not (isinstance(sub, str) and isinstance(username, str) and isinstance(role, str)):
        raise InvalidToken("malformed claims")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidToken("malformed claims")
    return Identity(
        user_id=sub,
        username=username,
        role=role,
        expires_at=float(claims["exp"]),
        version=version,
    )


def _b64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


# PyJWT checks each character of each segment in Python: about 100 µs a token, a tenth of
# a WebSocket handshake's CPU. A valid token exactly as issue_token makes it (this header,
# canonical base64url, only the claims it writes, each of its type) is checked here in a
# few µs. Anything else, a bad signature included, goes to PyJWT, which decides: this
# path only accepts, never refuses, and accepts nothing PyJWT would refuse.
# PyJWT is imported at its first use, not at start: it imports cryptography when it is
# installed, 10 MB in each web process, and a web process that only checks the tokens it
# issued (its sockets' handshakes) never needs it.
_HEADER = _b64url(json.dumps({"alg": ALGORITHM, "typ": "JWT"}, separators=(",", ":")).encode())
_ISSUED = {"sub": str, "username": str, "role": str, "iat": int, "exp": int, "ver": int}


def _issued_claims(secret: str, token: str) -> dict[str, Any] | None:
    """The claims of a valid, unexpired token of issue_token's shape; None for any other."""
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        return None
    signed, _, signature = raw.rpartition(b".")
    header, _, payload = signed.partition(b".")
    if header != _HEADER or b"." in payload:
        return None
    expected = _b64url(hmac.digest(secret.encode(), signed, "sha256"))
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        decoded = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
        claims = msgspec.json.decode(decoded)
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        return None
    if _b64url(decoded) != payload or not isinstance(claims, dict):
        return None
    if not ({"sub", "iat", "exp"} <= claims.keys() <= _ISSUED.keys()):
        return None
    if any(type(value) is not _ISSUED[name] for name, value in claims.items()):
        return None
    if not claims["iat"] <= time.time() < claims["exp"]:
        return None  # expired, or issued in the future
    return claims


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


_DUMMY_HASH = hash_password("not a real password")

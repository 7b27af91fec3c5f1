"""JWT bearer authentication (PyJWT): pinned algorithms, required claims, stable codes.

``JwtAuthenticator.verify(token) -> Principal`` implements the ``Authenticator``
protocol of ``context``. What it refuses, each with its own 401 code:

- a token longer than ``max_token_bytes`` (checked before any parsing);
- a header naming an algorithm outside the pinned list (``none``, HS256 when only
  RS256 is allowed: the HS/RS confusion attack never reaches a key);
- RS256 without a ``kid`` or with one the JWKS file does not hold;
- a bad signature, ``exp`` in the past, ``nbf`` in the future (``leeway_s`` of
  clock skew either way), a missing ``exp``/``sub``/``aud``/``iss``, the wrong
  audience or issuer, a subject that is not a valid user id.

The key is chosen by the algorithm the header names, and ``jwt.decode`` is then
told that one algorithm only, so a token can never pick its own verification.
Verified tokens are cached until their ``exp`` (a dict lookup instead of an
HMAC/RSA check per request); a cached token is re-checked against the clock on
every hit.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK

from trade_engine.config import DEV_HS256_SECRET, GatewayAuthSettings, GatewaySettings
from trade_engine.connectors.gateway.context import Principal
from trade_engine.connectors.gateway.exceptions import AuthError
from trade_engine.errors import ConfigError

# A user id valid in every place it travels: wire commands (``[A-Za-z0-9_.:-]{1,64}``) and
# the wallet (``[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}``).
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_REQUIRED = ["exp", "sub", "aud", "iss"]
_CACHE_MAX = 50_000
_JWKS_RELOAD_S = 30.0

_ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "AUTH_TOKEN_EXPIRED", "token expired"),
    (jwt.ImmatureSignatureError, "AUTH_TOKEN_NOT_YET_VALID", "token not yet valid (nbf/iat)"),
    (jwt.MissingRequiredClaimError, "AUTH_MISSING_CLAIM", "a required claim is missing"),
    (jwt.InvalidAudienceError, "AUTH_INVALID_AUDIENCE", "wrong audience"),
    (jwt.InvalidIssuerError, "AUTH_INVALID_ISSUER", "wrong issuer"),
    (jwt.InvalidSignatureError, "AUTH_INVALID_SIGNATURE", "signature verification failed"),
    (jwt.InvalidAlgorithmError, "AUTH_ALGORITHM_NOT_ALLOWED", "algorithm not allowed"),
)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ``AuthError``."""
    if not authorization:
        raise AuthError("missing bearer token", code="AUTH_MISSING_TOKEN")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("expected 'Authorization: Bearer <token>'", code="AUTH_MISSING_TOKEN")
    return token


def refuse_dev_secret(settings: GatewaySettings) -> None:
    """``ConfigError`` when HS256 would verify tokens with the development secret
    committed in this repository (anyone could mint any user's token) and
    ``gateway.dev_mode`` is off. Checked before the gateway serves anything."""
    auth = settings.auth
    if settings.dev_mode or "HS256" not in auth.algorithms or auth.hs256_secret is None:
        return
    if auth.hs256_secret.get_secret_value() == DEV_HS256_SECRET:
        raise ConfigError(
            "gateway.auth.hs256_secret",
            "is the development secret committed in the repository, so anyone can mint "
            "tokens with it: set a secret of your own of at least 32 characters "
            "(TE_GATEWAY__AUTH__HS256_SECRET) or use RS256 (gateway.auth.algorithms, "
            "gateway.auth.jwks_file); for local development only, set gateway.dev_mode "
            "(TE_GATEWAY__DEV_MODE=true or 'gateway run --dev-mode')",
        )


class JwtAuthenticator:
    def __init__(
        self, settings: GatewayAuthSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self._allowed = frozenset(settings.algorithms)
        self._secret = settings.hs256_secret.get_secret_value() if settings.hs256_secret else None
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._jwks: dict[str, PyJWK] = {}
        self._jwks_mtime = 0.0
        self._jwks_checked = 0.0
        if "RS256" in self._allowed:
            self._load_jwks()

    # -- the protocol -------------------------------------------------------------

    def verify(self, token: str) -> Principal:
        if len(token) > self.settings.max_token_bytes:
            raise AuthError(
                f"token longer than {self.settings.max_token_bytes} bytes",
                code="AUTH_TOKEN_TOO_LARGE",
            )
        cached = self._cache.get(token)
        if cached is not None:
            principal, exp = cached
            if self._clock() <= exp + self.settings.leeway_s:
                return principal
            del self._cache[token]
        claims = self._decode(token)
        principal = _principal(claims)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (principal, float(claims["exp"]))
        return principal

    # -- internals ------------------------------------------------------------------

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token", code="AUTH_MALFORMED_TOKEN") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise AuthError(
                f"algorithm {str(alg)[:16]!r} not allowed",
                {"allowed": sorted(self._allowed)},
                code="AUTH_ALGORITHM_NOT_ALLOWED",
            )
        key = self._key(alg, header)
        s = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": _REQUIRED, "verify_sub": True},
            )
        except jwt.InvalidTokenError as exc:
            for cls, code, message in _ERRORS:
                if isinstance(exc, cls):
                    raise AuthError(message, code=code) from None
            raise AuthError("invalid token", code="AUTH_INVALID_TOKEN") from None
        if not isinstance(claims.get("exp"), int | float):
            raise AuthError("exp must be a number", code="AUTH_INVALID_TOKEN")
        return claims

    def _key(self, alg: str, header: Mapping[str, Any]) -> Any:
        if alg == "HS256":
            return self._secret
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("RS256 tokens must name their key (kid)", code="AUTH_UNKNOWN_KEY")
        jwk = self._jwks.get(kid)
        if jwk is None and self._maybe_reload():
            jwk = self._jwks.get(kid)
        if jwk is None:
            raise AuthError("unknown signing key", {"kid": kid[:64]}, code="AUTH_UNKNOWN_KEY")
        return jwk.key

    def _maybe_reload(self) -> bool:
        """Key rotation: re-read the JWKS file when it changed (at most every 30 s)."""
        now = time.monotonic()
        if now - self._jwks_checked < _JWKS_RELOAD_S:
            return False
        self._jwks_checked = now
        path = self.settings.jwks_file
        if path is None or not path.is_file() or path.stat().st_mtime == self._jwks_mtime:
            return False
        self._load_jwks()
        return True

    def _load_jwks(self) -> None:
        path = self.settings.jwks_file
        assert path is not None
        self._jwks = load_jwks(path)
        self._jwks_mtime = path.stat().st_mtime
        self._jwks_checked = time.monotonic()


def load_jwks(path: Path) -> dict[str, PyJWK]:
    """RSA signing keys of a JWKS file by ``kid``; keys for other uses are skipped."""
    document = json.loads(path.read_text(encoding="utf-8"))
    keys: dict[str, PyJWK] = {}
    for raw in document.get("keys", []):
        if raw.get("kty") != "RSA" or raw.get("use", "sig") != "sig" or not raw.get("kid"):
            continue
        if raw.get("alg", "RS256") != "RS256":
            continue
        keys[str(raw["kid"])] = PyJWK.from_dict(raw, algorithm="RS256")
    if not keys:
        raise ValueError(f"{path}: no RSA signing key with a kid")
    return keys


def _principal(claims: Mapping[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not USER_ID.fullmatch(sub):
        raise AuthError("sub is not a valid user id", code="AUTH_INVALID_SUBJECT")
    scopes: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        scopes.update(scope.split())
    listed = claims.get("scopes")
    if isinstance(listed, list):
        scopes.update(s for s in listed if isinstance(s, str))
    return Principal(user_id=sub, scopes=frozenset(scopes))


def mint_token(
    settings: GatewayAuthSettings,
    user_id: str,
    *,
    admin: bool = False,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """An HS256 token from the development secret (``trade-engine gateway token``)."""
    if settings.hs256_secret is None:
        raise ValueError("gateway.auth.hs256_secret is not set")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": user_id,
        "aud": settings.audience,
        "iss": settings.issuer,
        "iat": issued,
        "exp": issued + ttl_s,
        "scope": "trade admin" if admin else "trade",
    }
    return jwt.encode(claims, settings.hs256_secret.get_secret_value(), algorithm="HS256")

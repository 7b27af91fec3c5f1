"""The JWT attack set: every token below is refused with its own 401 code, before any
order can reach Kafka (the app-level test checks the command topic stays empty); the
gateway never starts with the development secret outside development mode; headers
too long for the HTTP parser still get the standard error body."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from trade_engine import logs
from trade_engine.cli import main
from trade_engine.config import DEV_HS256_SECRET, GatewayAuthSettings, Settings, load_settings
from trade_engine.connectors.gateway import app as gateway_app
from trade_engine.connectors.gateway.app import MAX_FIELD_BYTES, create_app
from trade_engine.connectors.gateway.auth import JwtAuthenticator, bearer_token, mint_token
from trade_engine.connectors.gateway.exceptions import AuthError
from trade_engine.errors import ConfigError

from .conftest import LIMIT_ORDER, Gateway

SECRET = "test-secret-0123456789abcdef0123456789abcdef"


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "u1", "aud": "trade-engine", "iss": "issuer", "exp": now + 600, "iat": now}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


def _auth(jwks: Path | None = None, algorithms: list[str] | None = None) -> JwtAuthenticator:
    settings = GatewayAuthSettings(
        algorithms=algorithms or (["RS256"] if jwks else ["HS256"]),  # type: ignore[arg-type]
        hs256_secret=SECRET,  # type: ignore[arg-type]
        jwks_file=jwks,
        audience="trade-engine",
        issuer="issuer",
        leeway_s=30,
        max_token_bytes=4096,
    )
    return JwtAuthenticator(settings)


def _code(auth: JwtAuthenticator, token: str) -> str:
    with pytest.raises(AuthError) as err:
        _verify_at(auth, token)
    assert err.value.status == 401
    return err.value.code


def _verify_at(auth: JwtAuthenticator, token: str) -> Any:
    return auth.verify(token)


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def test_valid_hs256_token_gives_the_subject_and_scopes() -> None:
    token = jwt.encode(_claims(scope="trade admin"), SECRET, algorithm="HS256")
    principal = _verify_at(_auth(), token)
    assert principal.user_id == "u1"
    assert principal.is_admin


def test_valid_rs256_token_with_known_kid(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    assert _verify_at(_auth(jwks_file), token).user_id == "u1"


def test_alg_none_is_refused() -> None:
    token = _unsigned({"alg": "none", "typ": "JWT"}, _claims())
    assert _code(_auth(), token) == "AUTH_ALGORITHM_NOT_ALLOWED"


def test_hs_rs_confusion_is_refused(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """An HS256 token 'signed' with the RS256 public key must never verify."""
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    signing_input = _unsigned(header, _claims())[:-1].encode()
    sig = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = signing_input.decode() + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    assert _code(_auth(jwks_file), token) == "AUTH_ALGORITHM_NOT_ALLOWED"
    # Even with both algorithms allowed, the HMAC key is the secret, never the public key.
    both = _auth(jwks_file, ["HS256", "RS256"])
    assert _code(both, token) == "AUTH_INVALID_SIGNATURE"


def test_expired_beyond_leeway_is_refused() -> None:
    now = int(time.time())  # PyJWT checks exp/nbf/iat against the wall clock
    token = jwt.encode(_claims(exp=now - 31), SECRET, algorithm="HS256")
    assert _code(_auth(), token) == "AUTH_TOKEN_EXPIRED"
    within = jwt.encode(_claims(exp=now - 29), SECRET, algorithm="HS256")
    assert _verify_at(_auth(), within).user_id == "u1"


@pytest.mark.parametrize("claim", ["exp", "sub", "aud", "iss"])
def test_missing_required_claim_is_refused(claim: str) -> None:
    token = jwt.encode(_claims(**{claim: None}), SECRET, algorithm="HS256")
    assert _code(_auth(), token) == "AUTH_MISSING_CLAIM"


def test_wrong_audience_and_issuer_are_refused() -> None:
    aud = jwt.encode(_claims(aud="other"), SECRET, algorithm="HS256")
    iss = jwt.encode(_claims(iss="other"), SECRET, algorithm="HS256")
    assert _code(_auth(), aud) == "AUTH_INVALID_AUDIENCE"
    assert _code(_auth(), iss) == "AUTH_INVALID_ISSUER"


def test_unknown_or_missing_kid_is_refused(jwks_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    unknown = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k9"})
    none = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    assert _code(_auth(jwks_file), unknown) == "AUTH_UNKNOWN_KEY"
    assert _code(_auth(jwks_file), none) == "AUTH_UNKNOWN_KEY"


def test_other_rsa_key_with_known_kid_is_refused(jwks_file: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), other, algorithm="RS256", headers={"kid": "k1"})
    assert _code(_auth(jwks_file), token) == "AUTH_INVALID_SIGNATURE"


def test_oversized_token_is_refused_before_parsing() -> None:
    token = jwt.encode(_claims(pad="x" * 5000), SECRET, algorithm="HS256")
    assert _code(_auth(), token) == "AUTH_TOKEN_TOO_LARGE"


def test_bad_signature_tampered_payload_and_garbage() -> None:
    token = jwt.encode(_claims(), "another-secret-0123456789abcdef01234567", algorithm="HS256")
    assert _code(_auth(), token) == "AUTH_INVALID_SIGNATURE"
    good = jwt.encode(_claims(), SECRET, algorithm="HS256")
    head, _, sig = good.split(".")
    forged = _unsigned({"alg": "HS256"}, _claims(sub="u2")).split(".")[1]
    assert _code(_auth(), f"{head}.{forged}.{sig}") == "AUTH_INVALID_SIGNATURE"
    assert _code(_auth(), "not-a-jwt") == "AUTH_MALFORMED_TOKEN"


def test_not_yet_valid_and_bad_subject_are_refused() -> None:
    now = int(time.time())
    nbf = jwt.encode(_claims(nbf=now + 120), SECRET, algorithm="HS256")
    assert _code(_auth(), nbf) == "AUTH_TOKEN_NOT_YET_VALID"
    sub = jwt.encode(_claims(sub="u 1/../x"), SECRET, algorithm="HS256")
    assert _code(_auth(), sub) == "AUTH_INVALID_SUBJECT"


def test_cached_token_still_expires() -> None:
    settings = GatewayAuthSettings(hs256_secret=SECRET, leeway_s=0)  # type: ignore[arg-type]
    auth = JwtAuthenticator(settings)
    token = mint_token(settings, "u1", ttl_s=3)
    assert auth.verify(token).user_id == "u1"
    assert auth.verify(token).user_id == "u1"  # from the cache
    time.sleep(3.2)
    with pytest.raises(AuthError) as err:
        auth.verify(token)
    assert err.value.code == "AUTH_TOKEN_EXPIRED"


def test_bearer_header_forms() -> None:
    assert bearer_token("Bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer ", "abc"):
        with pytest.raises(AuthError) as err:
            bearer_token(bad)
        assert err.value.code == "AUTH_MISSING_TOKEN"


@pytest.mark.broker
@pytest.mark.postgres
async def test_attack_tokens_get_401_and_nothing_reaches_kafka(gateway: Gateway) -> None:
    secret = gateway.settings.gateway.auth.hs256_secret
    assert secret is not None
    key = secret.get_secret_value()
    base = {"sub": "u1", "aud": "trade-engine", "iss": "trade-engine-dev"}
    now = int(time.time())
    tokens = {
        "AUTH_ALGORITHM_NOT_ALLOWED": _unsigned({"alg": "none"}, base | {"exp": now + 60}),
        "AUTH_TOKEN_EXPIRED": jwt.encode(base | {"exp": now - 3600}, key, algorithm="HS256"),
        "AUTH_MISSING_CLAIM": jwt.encode(base, key, algorithm="HS256"),
        "AUTH_INVALID_AUDIENCE": jwt.encode(
            base | {"aud": "x", "exp": now + 60}, key, algorithm="HS256"
        ),
        "AUTH_INVALID_ISSUER": jwt.encode(
            base | {"iss": "x", "exp": now + 60}, key, algorithm="HS256"
        ),
        "AUTH_TOKEN_TOO_LARGE": jwt.encode(
            base | {"exp": now + 60, "pad": "x" * 10_000}, key, algorithm="HS256"
        ),
        "AUTH_INVALID_SIGNATURE": jwt.encode(base | {"exp": now + 60}, "x" * 40, algorithm="HS256"),
    }
    for code, token in tokens.items():
        resp = await gateway.client.post(
            "/api/v1/orders", json=LIMIT_ORDER, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 401, code
        body = await resp.json()
        assert body["code"] == code
        assert set(body) == {"error", "code", "details"}
    resp = await gateway.client.post("/api/v1/orders", json=LIMIT_ORDER)
    assert resp.status == 401
    assert (await resp.json())["code"] == "AUTH_MISSING_TOKEN"
    assert gateway.commands(wait_s=1.0) == []


# -- the development secret ---------------------------------------------------------


@pytest.fixture
def no_dev_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TE_GATEWAY__DEV_MODE", "TE_GATEWAY__AUTH__HS256_SECRET", "TE_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_dev_env")
def test_gateway_refuses_the_committed_dev_secret_outside_dev_mode() -> None:
    settings = load_settings()
    assert settings.gateway.auth.hs256_secret is not None
    assert settings.gateway.auth.hs256_secret.get_secret_value() == DEV_HS256_SECRET
    assert not settings.gateway.dev_mode
    with pytest.raises(ConfigError) as err:
        create_app(settings, market_data=False)
    assert err.value.setting == "gateway.auth.hs256_secret"
    assert "TE_GATEWAY__DEV_MODE" in str(err.value)
    assert DEV_HS256_SECRET not in str(err.value)
    # The same secret given explicitly is just as public.
    explicit = load_settings(gateway={"auth": {"hs256_secret": DEV_HS256_SECRET}})
    with pytest.raises(ConfigError):
        create_app(explicit, market_data=False)


@pytest.mark.usefixtures("no_dev_env")
def test_gateway_starts_in_dev_mode_or_with_a_secret_of_its_own(
    monkeypatch: pytest.MonkeyPatch, jwks_file: Path
) -> None:
    create_app(load_settings(gateway={"dev_mode": True}), market_data=False)
    create_app(load_settings(gateway={"auth": {"hs256_secret": SECRET}}), market_data=False)
    # RS256 only: the (default) HS256 secret verifies nothing.
    rs256 = {"algorithms": ["RS256"], "jwks_file": str(jwks_file)}
    create_app(load_settings(gateway={"auth": rs256}), market_data=False)
    monkeypatch.setenv("TE_GATEWAY__DEV_MODE", "true")
    assert load_settings().gateway.dev_mode
    create_app(load_settings(), market_data=False)


@pytest.mark.usefixtures("no_dev_env")
def test_gateway_run_refuses_the_dev_secret_unless_dev_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[Settings] = []

    def fake_serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
        served.append(settings)

    monkeypatch.setattr(gateway_app, "serve", fake_serve)
    monkeypatch.setattr(logs, "configure", lambda level: None)
    assert main(["gateway", "run"]) == 2
    assert served == []
    err = capsys.readouterr().err
    assert "gateway.auth.hs256_secret" in err
    assert "TE_GATEWAY__DEV_MODE" in err
    assert main(["gateway", "run", "--dev-mode"]) == 0
    assert [s.gateway.dev_mode for s in served] == [True]
    monkeypatch.setenv("TE_GATEWAY__DEV_MODE", "1")
    assert main(["gateway", "run"]) == 0
    assert len(served) == 2


# -- headers the HTTP parser refuses --------------------------------------------------


@pytest.mark.broker
@pytest.mark.postgres
async def test_oversized_headers_get_431_with_the_error_body(gateway: Gateway) -> None:
    token = "Z" * 60_000  # 60 KB: beyond the parser's limit, not just max_token_bytes
    resp = await gateway.client.post(
        "/api/v1/orders", json=LIMIT_ORDER, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 431
    assert resp.content_type == "application/json"
    text = await resp.text()
    assert "ZZZZ" not in text  # aiohttp's own answer quotes the refused bytes
    assert json.loads(text) == {
        "error": "request header fields too large",
        "code": "HEADER_TOO_LARGE",
        "details": {"max_field_bytes": MAX_FIELD_BYTES},
    }
    resp = await gateway.client.get("/api/v1/symbols", headers={"X-Padding": "p" * 60_000})
    assert resp.status == 431
    assert (await resp.json())["code"] == "HEADER_TOO_LARGE"
    # Below the parser's limit the authenticator answers, as before.
    resp = await gateway.client.post(
        "/api/v1/orders", json=LIMIT_ORDER, headers={"Authorization": "Bearer " + "Z" * 20_000}
    )
    assert resp.status == 401
    assert (await resp.json())["code"] == "AUTH_TOKEN_TOO_LARGE"
    # The gateway still serves on (each refusal closed only its own connection).
    resp = await gateway.client.get("/api/v1/symbols")
    assert resp.status == 200
    assert gateway.commands(wait_s=1.0) == []


@pytest.mark.broker
@pytest.mark.postgres
async def test_malformed_http_gets_400_with_the_error_body(gateway: Gateway) -> None:
    server = gateway.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400"), head
    assert b"application/json" in head
    assert json.loads(body) == {
        "error": "malformed HTTP request",
        "code": "BAD_HTTP_REQUEST",
        "details": {},
    }

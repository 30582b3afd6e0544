"""Bearer tokens as a Supabase backend checks them: HS256 with the secret, RS256/ES256 from a JWKS the test serves."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests import factories, http_server
from tests.http_server import Jwks, RunningApi
from usagemeter import api
from usagemeter.api import auth

ACTION = "agency:scope:generate"


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    yield served
    served.server.shutdown()


@pytest.fixture
def jwks_api(app_database_url: str, jwks: Jwks) -> Iterator[http_server.RunningApi]:
    config = api.ServerConfig(
        app_database_url=app_database_url,
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=jwks.url, issuer=None),
    )
    with http_server.running_api(config) as running:
        yield running


def user_claims(user: uuid.UUID, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(user), "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 600, **extra}


@pytest.fixture
def member(owner: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    user = factories.add_user(owner)
    tenant = factories.add_tenant(owner)
    factories.add_member(owner, tenant, user)
    factories.add_event(owner, tenant_id=tenant, user_id=user, action=ACTION, tokens_input=7)
    return user, tenant


def usage_of(client: httpx.Client, tenant: uuid.UUID) -> Any:
    return client.get("/v1/usage", params={"tenant": str(tenant), "from": "2000-01-01", "to": "2100-01-01"})


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda user: jwt.encode({**user_claims(user), "exp": int(time.time()) - 60}, http_server.SECRET),
            id="expired",
        ),
        pytest.param(
            lambda user: jwt.encode(user_claims(user), "another-secret-another-secret-xx"), id="wrong-signature"
        ),
        pytest.param(
            lambda user: jwt.encode(user_claims(user, aud="someone-else"), http_server.SECRET), id="wrong-audience"
        ),
        pytest.param(
            lambda user: jwt.encode({k: v for k, v in user_claims(user).items() if k != "aud"}, http_server.SECRET),
            id="no-audience",
        ),
        pytest.param(
            lambda user: jwt.encode({k: v for k, v in user_claims(user).items() if k != "exp"}, http_server.SECRET),
            id="no-expiry",
        ),
        pytest.param(lambda user: jwt.encode(user_claims(user), key="", algorithm="none"), id="alg-none"),
        pytest.param(lambda user: jwt.encode(user_claims(user), http_server.SECRET, algorithm="HS512"), id="hs512"),
        pytest.param(
            lambda user: jwt.encode(user_claims(user, role="supabase_admin"), http_server.SECRET), id="unknown-role"
        ),
        pytest.param(lambda user: jwt.encode(user_claims(user, sub="not-a-uuid"), http_server.SECRET), id="bad-sub"),
        pytest.param(lambda user: "not.a.jwt", id="garbage"),
    ],
)
def test_bad_tokens_get_401_with_a_challenge_and_no_data(
    api_server: RunningApi, member: tuple[uuid.UUID, uuid.UUID], make_token: Callable[[uuid.UUID], str]
) -> None:
    user, tenant = member
    answer = usage_of(api_server.client(make_token(user)), tenant)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith('Bearer realm="usagemeter"')
    assert answer.headers["content-type"] == "application/problem+json"
    assert "7" not in answer.text.replace(str(user), "").replace(str(tenant), "")


def test_no_token_or_another_scheme_is_401(api_server: RunningApi, member: tuple[uuid.UUID, uuid.UUID]) -> None:
    _, tenant = member
    assert usage_of(api_server.client(), tenant).status_code == 401
    basic = api_server.client()
    basic.headers["Authorization"] = "Basic dXNlcjpwYXNz"
    assert usage_of(basic, tenant).status_code == 401


def test_a_good_hs256_token_reads_its_tenant(api_server: RunningApi, member: tuple[uuid.UUID, uuid.UUID]) -> None:
    user, tenant = member
    answer = usage_of(api_server.client(jwt.encode(user_claims(user), http_server.SECRET)), tenant)
    assert answer.status_code == 200
    assert answer.json()[0]["tokens_input"] == 7


def test_an_anon_key_reads_nothing(api_server: RunningApi, member: tuple[uuid.UUID, uuid.UUID]) -> None:
    _, tenant = member
    anon = jwt.encode({"role": "anon", "iss": "supabase", "exp": int(time.time()) + 600}, http_server.SECRET)
    answer = usage_of(api_server.client(anon), tenant)
    assert answer.status_code in (200, 403)
    if answer.status_code == 200:
        assert answer.json() == []


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_asymmetric_tokens_from_the_jwks_and_a_rotated_key(
    jwks_api: RunningApi, jwks: Jwks, member: tuple[uuid.UUID, uuid.UUID], alg: str
) -> None:
    user, tenant = member

    def new_key() -> Any:
        return (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )

    first = new_key()
    jwks.add(first.public_key(), "key-1", alg)
    answer = usage_of(
        jwks_api.client(jwt.encode(user_claims(user), first, algorithm=alg, headers={"kid": "key-1"})), tenant
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["tokens_input"] == 7
    fetches = jwks.fetches
    usage_of(jwks_api.client(jwt.encode(user_claims(user), first, algorithm=alg, headers={"kid": "key-1"})), tenant)
    assert jwks.fetches == fetches  # cached

    time.sleep(auth.REFETCH_INTERVAL)  # a new kid refetches the set (at most once per interval)
    rotated = new_key()
    jwks.add(rotated.public_key(), "key-2", alg)
    answer = usage_of(
        jwks_api.client(jwt.encode(user_claims(user), rotated, algorithm=alg, headers={"kid": "key-2"})), tenant
    )
    assert answer.status_code == 200, answer.text
    assert jwks.fetches == fetches + 1

    forged = new_key()  # signed by a key not in the set, under a known kid
    answer = usage_of(
        jwks_api.client(jwt.encode(user_claims(user), forged, algorithm=alg, headers={"kid": "key-1"})), tenant
    )
    assert answer.status_code == 401


def test_unknown_kids_cannot_make_every_request_fetch(
    jwks_api: RunningApi, jwks: Jwks, member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, tenant = member
    key = ec.generate_private_key(ec.SECP256R1())
    for n in range(5):
        token = jwt.encode(user_claims(user), key, algorithm="ES256", headers={"kid": f"forged-{n}"})
        assert usage_of(jwks_api.client(token), tenant).status_code == 401
    assert jwks.fetches <= 1


def test_an_rs256_token_is_refused_without_a_jwks(api_server: RunningApi, member: tuple[uuid.UUID, uuid.UUID]) -> None:
    user, tenant = member
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    answer = usage_of(
        api_server.client(jwt.encode(user_claims(user), key, algorithm="RS256", headers={"kid": "k"})), tenant
    )
    assert answer.status_code == 401
    assert "no JWKS" in answer.json()["detail"]


def test_the_issuer_is_checked_when_configured(app_database_url: str, member: tuple[uuid.UUID, uuid.UUID]) -> None:
    user, tenant = member
    config = api.ServerConfig(
        app_database_url=app_database_url,
        verifier=auth.TokenVerifier(secret=http_server.SECRET, jwks_url=None, issuer="https://ref.supabase.co/auth/v1"),
    )
    with http_server.running_api(config) as running:
        right = jwt.encode(user_claims(user, iss="https://ref.supabase.co/auth/v1"), http_server.SECRET)
        wrong = jwt.encode(user_claims(user, iss="https://evil.example/auth/v1"), http_server.SECRET)
        assert usage_of(running.client(right), tenant).status_code == 200
        assert usage_of(running.client(wrong), tenant).status_code == 401


def test_a_service_role_token_reads_every_tenant(
    api_server: RunningApi, owner: psycopg.Connection[Any], member: tuple[uuid.UUID, uuid.UUID]
) -> None:
    _, tenant = member
    answer = usage_of(api_server.as_service(), tenant)
    assert answer.status_code == 200
    assert answer.json()[0]["tokens_input"] == 7

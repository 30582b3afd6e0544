"""Supabase access tokens, verified as a Supabase backend verifies them, and minted for local use.

HS256 tokens are checked with the project's JWT secret, RS256/ES256 tokens with a key from the
project's JWKS (cached; an unknown `kid` refetches the set, at most once per REFETCH_INTERVAL so
forged kids cannot turn every request into a fetch). Expiry is required, the audience must be
`authenticated` (the anon and service keys Supabase issues carry no audience and are accepted
without one), and the issuer is checked when one is configured. Everything else, `alg: none`
first, is refused. What a verified token may then do is for the database's policies to decide.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt

from usagemeter import errors
from usagemeter.db import Identity
from usagemeter.recording import event

AUDIENCE = "authenticated"
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
KEYLESS_AUDIENCE_ROLES = ("anon", "service_role")  # Supabase's API keys are JWTs without `aud`
CLOCK_SKEW = timedelta(seconds=10)
VERIFIED_CACHE_SIZE = 10_000  # tokens whose signature was checked, reused until they expire
REFETCH_INTERVAL = 5.0  # seconds between JWKS fetches caused by unknown kids
JWKS_LIFESPAN = 300.0  # seconds a fetched key is trusted before the set is fetched again


@dataclass
class _KeyCache:
    """Signing keys by kid, fetched from the JWKS URL off the event loop, with a bound on refetches."""

    client: jwt.PyJWKClient
    keys: dict[str, tuple[jwt.PyJWK, float]] = field(default_factory=dict)
    last_fetch: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def key_for(self, kid: str) -> jwt.PyJWK:
        cached = self.keys.get(kid)
        if cached is not None and time.monotonic() - cached[1] < JWKS_LIFESPAN:
            return cached[0]
        async with self.lock:
            cached = self.keys.get(kid)
            now = time.monotonic()
            if cached is not None and now - cached[1] < JWKS_LIFESPAN:
                return cached[0]
            if cached is None and now - self.last_fetch < REFETCH_INTERVAL:
                raise errors.InvalidToken(f"the token's key id {kid[:64]!r} is not in the JWKS")
            self.last_fetch = now
            try:
                found = await asyncio.to_thread(self.client.get_jwk_set, True)
            except (jwt.PyJWTError, OSError) as failure:  # unreachable, not JSON, or no usable keys
                raise errors.InvalidToken(f"cannot fetch the JWKS to check the token: {failure}") from None
            self.keys = {key.key_id: (key, now) for key in found.keys if key.key_id}
            if kid not in self.keys:
                raise errors.InvalidToken(f"the token's key id {kid[:64]!r} is not in the JWKS")
            return self.keys[kid][0]


class TokenVerifier:
    """Checks bearer tokens with the project's JWT secret and/or its JWKS.

    Parameters
    ----------
    secret:
        The project's JWT secret, for HS256 tokens (Supabase's legacy and local default).
    jwks_url:
        The project's JWKS URL (`https://<ref>.supabase.co/auth/v1/.well-known/jwks.json`), for
        RS256/ES256 tokens.
    issuer:
        When given, a token's `iss` must equal it.
    """

    def __init__(self, *, secret: str | None, jwks_url: str | None, issuer: str | None = None) -> None:
        if not secret and not jwks_url:
            raise errors.ConfigurationError(
                "no way to check tokens: set USAGEMETER_JWT_SECRET (--jwt-secret) or USAGEMETER_JWKS_URL (--jwks-url)"
            )
        self.secret = secret
        self.issuer = issuer
        self._keys = _KeyCache(jwt.PyJWKClient(jwks_url, cache_keys=False, timeout=5)) if jwks_url else None
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    async def claims(self, token: str) -> dict[str, Any]:
        """The token's verified claims; InvalidToken saying why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise errors.InvalidToken("the bearer token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256":
            if not self.secret:
                raise errors.InvalidToken("HS256 tokens are not accepted here: no JWT secret is configured")
            key = self.secret
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            if self._keys is None:
                raise errors.InvalidToken(f"{algorithm} tokens are not accepted here: no JWKS URL is configured")
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise errors.InvalidToken(f"an {algorithm} token needs a `kid` header naming its key in the JWKS")
            key = await self._keys.key_for(kid)
        else:
            raise errors.InvalidToken(
                f"tokens signed with alg {str(algorithm)[:20]!r} are refused: use HS256, RS256 or ES256"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                leeway=CLOCK_SKEW,
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise errors.InvalidToken("the token has expired") from None
        except jwt.InvalidIssuerError:
            raise errors.InvalidToken(f"the token's issuer is not {self.issuer!r}") from None
        except jwt.PyJWTError as failure:
            raise errors.InvalidToken(f"the token is invalid: {failure}") from None
        _check_audience(claims)
        return claims

    async def identity(self, token: str) -> Identity:
        """Who a verified token acts as: its `role` claim picks the role, exactly as PostgREST reads it.

        A client sends the same access token for its whole life, so a token verified once is
        remembered (by its full text, signature included) until its `exp`: checking a signature and
        parsing claims would otherwise be a fifth of each request's work.
        """
        cached = self._verified.get(token)
        if cached is not None:
            identity, expires = cached
            if time.time() < expires:
                self._verified.move_to_end(token)
                return identity
            del self._verified[token]
        claims = await self.claims(token)
        try:
            checked = event.validated_claims(claims)
            if claims.get("role", "authenticated") == "authenticated":
                identity = Identity.user_from_claims(checked)
            else:
                identity = Identity.from_claims(checked)
        except ValueError as failure:
            raise errors.InvalidToken(f"the token's claims are not usable: {failure}") from None
        self._verified[token] = (identity, float(claims["exp"]) + CLOCK_SKEW.total_seconds())
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return identity


def _check_audience(claims: dict[str, Any]) -> None:
    audience = claims.get("aud")
    if audience is None and claims.get("role") in KEYLESS_AUDIENCE_ROLES:
        return
    audiences = audience if isinstance(audience, list) else [audience]
    if AUDIENCE not in audiences:
        raise errors.InvalidToken(f"the token's audience must be {AUDIENCE!r}, got {audience!r}")


def mint(
    secret: str,
    *,
    user_id: uuid.UUID | None,
    role: str = "authenticated",
    ttl: timedelta = timedelta(hours=1),
    email: str | None = None,
    issuer: str | None = None,
) -> str:
    """An HS256 token with the claims Supabase Auth puts in an access token, for local use and the demo.

    A service-role token is what Supabase's service key is: `role: service_role`, no user.
    """
    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "iat": now, "exp": now + int(ttl.total_seconds())}
    if role == "authenticated":
        if user_id is None:
            raise errors.ConfigurationError("a user's token needs their user id (--user)")
        claims |= {"sub": str(user_id), "aud": AUDIENCE}
    elif user_id is not None:
        claims["sub"] = str(user_id)
    if email is not None:
        claims["email"] = email
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")

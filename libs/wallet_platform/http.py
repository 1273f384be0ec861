"""HTTP pieces shared by the services that face callers: JSON errors and the auth middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import Field

from ledger_core.errors import error_body, status_of
from wallet_platform.callback_auth import (
    AuthError,
    IpPolicy,
    TokenVerifier,
    bearer_token,
    load_public_keys,
)
from wallet_platform.config import CommonSettings, ConfigError, read_secret

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The caller's address as the auth middleware established it (after trusted proxies).
CLIENT_IP = "client_ip"

log = structlog.get_logger()


def json_error(code: str, message: str | None = None) -> web.Response:
    """The one way an error leaves a service: ``{"error": code, "message": text}``."""
    return web.Response(
        status=status_of(code), body=error_body(code, message), content_type="application/json"
    )


class CallbackAuthSettings(CommonSettings):
    """How Quadcode's callbacks are authenticated (shared by the edge and the projection)."""

    quadcode_public_key_files: str = Field(
        default="", description="Comma-separated paths of Quadcode's PEM public keys (rotation)."
    )
    quadcode_public_keys: str = Field(
        default="", description="Alternatively, the PEM public keys themselves (inline)."
    )
    environment: str = Field(
        default="sandbox",
        pattern="^(production|integration|sandbox)$",
        description="This deployment's environment: the JWT aud Quadcode must use.",
    )
    jwt_leeway_seconds: float = Field(
        default=5.0, ge=0, le=60, description="Clock skew tolerated on iat and exp."
    )
    allowed_ips: str = Field(
        default="127.0.0.1/32,::1/128",
        description="Comma-separated CIDRs allowed to call (IPv4 and IPv6).",
    )

    def verifier(self) -> TokenVerifier:
        pems: list[bytes] = []
        for path in filter(None, (p.strip() for p in self.quadcode_public_key_files.split(","))):
            pems.append(read_secret(path, None, "Quadcode public key"))
        if self.quadcode_public_keys.strip():
            blocks = self.quadcode_public_keys.replace("\\n", "\n").split(
                "-----END PUBLIC KEY-----"
            )
            pems += [(b + "-----END PUBLIC KEY-----\n").encode() for b in blocks if b.strip()]
        try:
            keys = load_public_keys(pems)
        except ValueError as exc:
            raise ConfigError(
                f"configuration error: WALLET_QUADCODE_PUBLIC_KEY_FILES: {exc}"
            ) from None
        return TokenVerifier(keys, audience=self.environment, leeway=self.jwt_leeway_seconds)


def cidrs(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def callback_auth_middleware(
    verifier: TokenVerifier, ips: IpPolicy, prefix: str = "/v1/"
) -> Middleware:
    """Reject (403, JSON) any request under ``prefix`` from a caller outside the allowlist or
    without a valid Quadcode token. Operational routes (/health, /ready, /metrics) stay open."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        # Every X-Forwarded-For header, in order: a second header must not hide behind the first.
        client = ips.client_ip(
            peer[0] if isinstance(peer, tuple) else "",
            request.headers.getall("X-Forwarded-For", ()),
        )
        if client is None or not ips.allowed(client):
            # The fixed message: neither the address nor any header text is echoed back.
            return json_error("ip_not_allowed")
        request[CLIENT_IP] = str(client)
        try:
            verifier.verify(bearer_token(request.headers.get("Authorization")))
        except AuthError as exc:
            return json_error(exc.code, exc.message)
        return await handler(request)

    return middleware


@web.middleware
async def json_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's own HTTP errors and unexpected exceptions into JSON error bodies."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return json_error("route_not_found")
    except web.HTTPMethodNotAllowed:
        return json_error("method_not_allowed")
    except web.HTTPRequestEntityTooLarge:
        return json_error("body_too_large")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return json_error("internal_error")

"""Bearer-token authentication with a per-caller method allow list.

Each configured :class:`~pushwarden.runtime.settings.CallerGrant` names a caller, the
SHA-256 of its token and the methods it may call. With no caller configured auth is
off (local development). Health checking and reflection always stay open so probes
and ``buf curl`` work without a token. The authenticated caller's name is available
to handlers and log lines through :data:`current_caller`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from pushwarden.runtime._wrap import rewrap
from pushwarden.runtime.context import current_caller as current_caller
from pushwarden.runtime.context import current_grant
from pushwarden.runtime.errors import PermissionDenied
from pushwarden.runtime.settings import CallerGrant

logger = logging.getLogger(__name__)

ALL_APPS = "*"


def require_app(app_id: str) -> None:
    """Refuse (PERMISSION_DENIED, reason APP_NOT_ALLOWED) an RPC on ``app_id`` that the
    authenticated caller's grant does not cover. An empty ``app_id`` means every app
    (the follower streams) and needs ``*``. Allows everything when auth is off.

    Servicers call this once per request, before touching data: the interceptor cannot,
    because the app id lives inside the request message.
    """
    grant = current_grant.get()
    if grant is None or ALL_APPS in grant.apps or (app_id and app_id in grant.apps):
        return
    wanted = repr(app_id) if app_id else "every app"
    raise PermissionDenied(
        f"caller {grant.name!r} may not use {wanted}",
        reason="APP_NOT_ALLOWED",
        metadata={"app_id": app_id, "caller": grant.name},
    )


OPEN_SERVICES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_BEARER = "bearer "
_DECISION_CACHE_LIMIT = 4096


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a bearer token, as stored in a :class:`CallerGrant`."""
    return hashlib.sha256(token.encode()).hexdigest()


def method_allowed(patterns: Sequence[str], method: str) -> bool:
    """Whether ``method`` (``/pkg.Service/Method``) matches one of the allow-list
    entries: the full method, ``/pkg.Service/*``, or ``*``."""
    service_prefix = method[: method.rfind("/") + 1]
    for pattern in patterns:
        if pattern in ("*", method):
            return True
        if pattern.endswith("/*") and pattern[:-1] == service_prefix:
            return True
    return False


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            if value[: len(_BEARER)].lower() == _BEARER:
                return value[len(_BEARER) :].strip() or None
            return None
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without a known token (UNAUTHENTICATED) or whose caller may not use
    the method (PERMISSION_DENIED); records the caller in :data:`current_caller`.

    The decision happens before the handler runs and an allowed call gets the handler
    unchanged, so auth adds no wrapper to the hot path.
    """

    def __init__(self, callers: Sequence[CallerGrant]) -> None:
        self._grants = tuple(callers)
        self._digests = tuple((grant.token_sha256.lower(), grant) for grant in self._grants)
        self._decisions: dict[tuple[str, str], bool] = {}

    @property
    def enabled(self) -> bool:
        """Whether any caller is configured (auth is off otherwise)."""
        return bool(self._grants)

    def _find_grant(self, token: str) -> CallerGrant | None:
        digest = token_sha256(token)
        found = None
        # Compare against every grant (no early exit) in constant time per comparison.
        for expected, grant in self._digests:
            if hmac.compare_digest(digest, expected):
                found = grant
        return found

    def _allowed(self, grant: CallerGrant, method: str) -> bool:
        key = (grant.name, method)
        decision = self._decisions.get(key)
        if decision is None:
            decision = method_allowed(grant.methods, method)
            if len(self._decisions) < _DECISION_CACHE_LIMIT:
                self._decisions[key] = decision
        return decision

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Decide the call, then hand over the real handler or a rejecting one."""
        method = handler_call_details.method
        if not self._grants or method.startswith(OPEN_SERVICES):
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        grant = self._find_grant(token) if token else None
        if grant is None:
            rejection = (grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        elif not self._allowed(grant, method):
            rejection = (
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {grant.name!r} may not call {method}",
            )
        else:
            current_caller.set(grant.name)
            current_grant.set(grant)
            return await continuation(handler_call_details)
        logger.warning(
            "call rejected",
            extra={
                "method": method,
                "code": rejection[0].name,
                "caller": grant.name if grant else None,
            },
        )
        reject = _rejecter(*rejection)
        handler = await continuation(handler_call_details)
        if handler is None:
            # Unknown method: still answer with the auth failure, so that a caller
            # without a valid token cannot probe which methods exist.
            return grpc.unary_unary_rpc_method_handler(reject(_no_behavior))
        return rewrap(handler, reject, reject)


def _no_behavior(_request: Any, _context: Any) -> None:
    """Stands in for the handler of a method the server does not have."""


def _rejecter(code: grpc.StatusCode, message: str) -> Callable[[Callable[..., Any]], Any]:
    """A wrapper whose behaviour aborts at once. A plain coroutine also suits streaming
    shapes: grpc.aio awaits a non-generator streaming behaviour as write-style."""

    def wrap(_behavior: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
        async def reject(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(code, message)

        return reject

    return wrap

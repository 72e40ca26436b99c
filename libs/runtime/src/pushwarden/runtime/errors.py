"""Domain errors and the one place that turns them into gRPC statuses.

Handlers raise the exceptions below; :class:`ErrorInterceptor` converts each into a
status code plus ``google.rpc`` details (BadRequest, PreconditionFailure, QuotaFailure,
RetryInfo, ResourceInfo, ErrorInfo) sent with ``abort_with_status``. Anything else a
handler raises becomes INTERNAL with an error id that the server's log line carries too,
so an operator can find the traceback from what the caller saw.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc

from pushwarden.runtime._wrap import WrappingInterceptor, iterate_response, rewrap
from pushwarden.runtime.context import current_caller

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "pushwarden.dev"

Context = grpc.aio.ServicerContext[Any, Any]


class DomainError(Exception):
    """Base of the errors a handler may raise on purpose.

    ``reason`` (UPPER_SNAKE_CASE) and ``metadata`` become a ``google.rpc.ErrorInfo``
    detail so that callers can branch on a stable machine-readable value.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message or self.code.name.replace("_", " ").lower()
        self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[Message]:
        """The ``google.rpc`` detail messages specific to this error kind."""
        return []

    def to_status(self) -> status_pb2.Status:
        """The full ``google.rpc.Status`` for this error."""
        messages = self.details()
        if self.reason:
            messages.append(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
                )
            )
        return build_status(self.code, self.message, messages)


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` lists ``(field, description)`` pairs."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self, message: str, violations: Sequence[tuple[str, str]] = (), **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.violations = tuple(violations)

    def details(self) -> list[Message]:
        """A BadRequest with one field violation per entry."""
        if not self.violations:
            return []
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
        ]


class _ResourceError(DomainError):
    """An error about one named resource, described by a ResourceInfo detail."""

    def __init__(
        self, message: str, *, resource_type: str = "", resource_name: str = "", **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def details(self) -> list[Message]:
        """A ResourceInfo when the resource is named."""
        if not (self.resource_type or self.resource_name):
            return []
        return [
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type,
                resource_name=self.resource_name,
                description=self.message,
            )
        ]


class NotFound(_ResourceError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(_ResourceError):
    """A resource with this identity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    """The system is not in the state the request needs; ``violations`` lists
    ``(type, subject, description)`` triples."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(
        self, message: str, violations: Sequence[tuple[str, str, str]] = (), **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.violations = tuple(violations)

    def details(self) -> list[Message]:
        """A PreconditionFailure with one violation per entry."""
        if not self.violations:
            return []
        return [
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=t, subject=s, description=d
                    )
                    for t, s, d in self.violations
                ]
            )
        ]


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    """The caller did not prove who it is."""

    code = grpc.StatusCode.UNAUTHENTICATED


class _RetryableError(DomainError):
    """An error after which the caller may try again, after ``retry_after_s`` if given."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s

    def details(self) -> list[Message]:
        """A RetryInfo when a delay is known."""
        if self.retry_after_s is None:
            return []
        return [error_details_pb2.RetryInfo(retry_delay=_duration(self.retry_after_s))]


class ResourceExhausted(_RetryableError):
    """A quota or rate limit is used up; ``violations`` lists ``(subject, description)``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self, message: str, violations: Sequence[tuple[str, str]] = (), **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.violations = tuple(violations)

    def details(self) -> list[Message]:
        """A QuotaFailure for the violations, then RetryInfo when a delay is known."""
        quota: list[Message] = []
        if self.violations:
            quota.append(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=s, description=d)
                        for s, d in self.violations
                    ]
                )
            )
        return quota + super().details()


class Unavailable(_RetryableError):
    """A dependency or this service cannot serve right now; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class Aborted(_RetryableError):
    """A concurrency conflict (lost a race, a transaction aborted); retry the whole
    read-modify-write."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(DomainError):
    """A value is past the valid range (a cursor past the end of a feed)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(DomainError):
    """The method exists in the contract but this server does not implement it yet."""

    code = grpc.StatusCode.UNIMPLEMENTED


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = math.floor(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def build_status(
    code: grpc.StatusCode, message: str, details: Sequence[Message] = ()
) -> status_pb2.Status:
    """A ``google.rpc.Status`` with ``details`` packed into ``Any``."""
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


def internal_status(error_id: str) -> status_pb2.Status:
    """The INTERNAL status an unexpected exception becomes: it names the error id only,
    never the exception text, which may hold personal data or secrets."""
    message = f"internal error (error id {error_id})"
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL_ERROR", domain=ERROR_DOMAIN, metadata={"error_id": error_id}
    )
    return build_status(grpc.StatusCode.INTERNAL, message, [info])


# SQLSTATEs (PostgreSQL) by the status they become; anything else from the database
# driver that is an OperationalError counts as "database unavailable".
_PG_ABORTED = {"40001", "40P01"}  # serialization failure, deadlock
_PG_UNIQUE, _PG_FOREIGN_KEY = "23505", "23503"
_PG_BUSY = {"55P03": "lock timeout", "57014": "statement timeout"}
DATABASE_RETRY_AFTER_S = 1.0


def database_error(exc: BaseException) -> DomainError | None:
    """The domain error a database failure means to the caller, or None when ``exc``
    is not one.

    A unique or foreign-key violation that escaped the handler's own checks is a lost
    race with a concurrent request: ABORTED (retry the whole call, which then sees the
    other write). A lock or statement timeout, a busy SQLite file, an exhausted pool or a
    lost connection is UNAVAILABLE with a retry delay. Serialization failures and
    deadlocks are ABORTED. Other constraint failures are FAILED_PRECONDITION, bad values
    INVALID_ARGUMENT. None of them is INTERNAL.
    """
    if isinstance(exc, sa_exc.TimeoutError):  # the pool had no free connection in time
        return Unavailable(
            "the database is busy; retry shortly",
            reason="DATABASE_BUSY",
            retry_after_s=DATABASE_RETRY_AFTER_S,
        )
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    sqlstate = str(getattr(orig, "sqlstate", "") or "")
    text = str(orig).lower()
    if isinstance(exc, sa_exc.IntegrityError):
        if (
            sqlstate in (_PG_UNIQUE, _PG_FOREIGN_KEY)
            or "unique constraint" in text
            or ("foreign key constraint" in text)
        ):
            return Aborted(
                "a concurrent request changed the same data; retry the call",
                reason="CONCURRENT_WRITE",
            )
        return FailedPrecondition(
            "the change breaks a database constraint", reason="CONSTRAINT_VIOLATION"
        )
    if sqlstate in _PG_ABORTED:
        return Aborted(
            "the transaction lost a race with a concurrent one; retry the call",
            reason="TRANSACTION_CONFLICT",
        )
    if sqlstate in _PG_BUSY or "database is locked" in text or "database table is locked" in text:
        return Unavailable(
            "the database is busy (lock wait timed out); retry shortly",
            reason="DATABASE_BUSY",
            retry_after_s=DATABASE_RETRY_AFTER_S,
        )
    if isinstance(exc, sa_exc.DataError):
        return InvalidArgument("a value does not fit what the database accepts")
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        exc.connection_invalidated
    ):
        return Unavailable(
            "the database is unavailable; retry shortly",
            reason="DATABASE_UNAVAILABLE",
            retry_after_s=DATABASE_RETRY_AFTER_S,
        )
    return None


async def abort_for(exc: Exception, context: Context, method: str) -> None:
    """Abort the RPC with the status ``exc`` maps to (always raises AbortError)."""
    translated = None if isinstance(exc, DomainError) else database_error(exc)
    if isinstance(exc, DomainError):
        status = exc.to_status()
    elif translated is not None:
        logger.warning(
            "database error in %s: %s",
            method,
            translated.reason,
            exc_info=exc,
            extra={"method": method, "caller": current_caller.get()},
        )
        status = translated.to_status()
    else:
        error_id = uuid.uuid4().hex
        logger.error(
            "unexpected error in %s",
            method,
            exc_info=exc,
            extra={"error_id": error_id, "method": method, "caller": current_caller.get()},
        )
        status = internal_status(error_id)
    await context.abort_with_status(rpc_status.to_status(status))


class ErrorInterceptor(WrappingInterceptor):
    """Turns exceptions escaping a handler (unary or streaming) into rich statuses."""

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Guard every behaviour of ``handler``."""
        return rewrap(handler, _unary_guard(method), _stream_guard(method))


def _unary_guard(method: str) -> Callable[[Callable[..., Any]], Any]:
    def wrap(behavior: Callable[..., Any]) -> Callable[[Any, Context], Awaitable[Any]]:
        async def guarded(request: Any, context: Context) -> Any:
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_for(exc, context, method)

        return guarded

    return wrap


def _stream_guard(method: str) -> Callable[[Callable[..., Any]], Any]:
    def wrap(behavior: Callable[..., Any]) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for item in iterate_response(behavior(request, context)):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_for(exc, context, method)

        return guarded

    return wrap

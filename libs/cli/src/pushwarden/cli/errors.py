"""Every failure the CLI reports: one line on stderr, a non-zero exit, no traceback.

A failed RPC is reported with its status code, its message and what its rich details
(``google.rpc.Status`` in the trailing metadata, see :mod:`pushwarden.runtime.errors`)
name: the bad fields of a BadRequest, the precondition violations, the ErrorInfo reason,
and for a service that cannot be reached, which service at which address.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]

__all__ = ["EXIT_FAILED", "EXIT_INPUT", "CliError", "rpc_error_line"]

EXIT_FAILED = 1  # a service refused or failed, or could not be reached
EXIT_INPUT = 2  # bad command line or bad input file (nothing was sent)


class CliError(Exception):
    """A failure to report as one line; ``exit_code`` is the process's exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())
        self.exit_code = exit_code


def _details(error: grpc.aio.AioRpcError) -> list[str]:
    """What the rich details name, each as a short phrase."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that do not match the status: ignore them
        return []
    parts: list[str] = []
    reason = ""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            parts.extend(f"{v.field}: {v.description}" for v in bad.field_violations)
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            parts.extend(
                f"{v.type} {v.subject}: {v.description}".strip() for v in failure.violations
            )
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            parts.extend(f"{v.subject}: {v.description}" for v in quota.violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
            parts.append(f"retry after {delay:g} s")
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    if reason:
        parts.append(f"reason {reason}")
    return parts


def rpc_error_line(error: grpc.aio.AioRpcError, service: str, address: str) -> str:
    """One line for a failed call to ``service`` at ``address``."""
    code = error.code()
    message = error.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE and not _details(error):
        # Nothing from a Pushwarden server: the transport failed.
        return f"UNAVAILABLE: {service} at {address} cannot be reached ({message})"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"DEADLINE_EXCEEDED: {service} at {address} did not answer in time"
    extra = _details(error)
    line = f"{code.name}: {message}" if message else code.name
    if extra:
        line += " (" + "; ".join(extra) + ")"
    return f"{line} [{service}]"

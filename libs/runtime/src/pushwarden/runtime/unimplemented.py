"""Serve a protobuf service from its descriptor, one RPC at a time.

Every service of the platform is registered through :func:`service_handler`: the
generated service descriptor lists each RPC with its message types and streaming
shape, and the handler serves each one with the servicer's method of the same name
when the servicer has it, or answers UNIMPLEMENTED with a message naming the RPC and
the issue that will bring it. A service therefore grows by adding methods to its
servicer, and a caller of an RPC that has not landed yet learns which one and when.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

__all__ = [
    "call_with_empty_request",
    "implemented_methods",
    "service_handler",
    "unimplemented_message",
]

# A string: grpc's classes are generic only in the type stubs, not at run time.
_HandlerFactory: TypeAlias = "Callable[..., grpc.RpcMethodHandler[Any, Any]]"

# grpc builds a method handler with one factory per streaming shape; which one a
# method needs follows from its two streaming flags.
_FACTORIES: dict[tuple[bool, bool], _HandlerFactory] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def unimplemented_message(full_method: str, pending_issue: int | None) -> str:
    """The status message of an RPC that has no implementation yet.

    ``full_method`` is ``package.Service/Method``; with ``pending_issue`` the message
    names the issue that will implement it.
    """
    when = f" (issue {pending_issue})" if pending_issue is not None else ""
    return f"{full_method} is not implemented yet{when}"


def _unimplemented_behavior(
    message: str,
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]:
    # One coroutine fits all four shapes: grpc.aio accepts a coroutine for streaming
    # responses too, and aborting before the first message ends the call either way.
    async def behavior(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return behavior


def _method_handler(
    service: ServiceDescriptor,
    method: MethodDescriptor,
    implementation: object,
    pending_issue: int | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    behavior = getattr(implementation, method.name, None)
    if not callable(behavior):
        behavior = _unimplemented_behavior(
            unimplemented_message(f"{service.full_name}/{method.name}", pending_issue)
        )
    factory = _FACTORIES[(method.client_streaming, method.server_streaming)]
    return factory(
        behavior,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )


def implemented_methods(service: ServiceDescriptor, implementation: object) -> tuple[str, ...]:
    """Names of the service's RPCs that ``implementation`` serves itself."""
    return tuple(
        method.name
        for method in service.methods
        if callable(getattr(implementation, method.name, None))
    )


def service_handler(
    service: ServiceDescriptor,
    implementation: object,
    *,
    pending_issue: int | None = None,
) -> grpc.GenericRpcHandler:
    """A handler for every RPC of ``service``, ready for ``server.add_generic_rpc_handlers``.

    Each RPC is served by the method of ``implementation`` with the RPC's name (a
    grpc.aio behaviour: ``async def Method(self, request, context)``, or an async
    generator for a streaming response); an RPC without one answers UNIMPLEMENTED
    with :func:`unimplemented_message`. Requests and responses use the message
    classes named by the descriptor, so no generated servicer base class is needed.
    """
    handlers = {
        method.name: _method_handler(service, method, implementation, pending_issue)
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


async def call_with_empty_request(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    *,
    timeout_s: float = 10.0,
) -> list[Any]:
    """Call ``method`` over ``channel`` with one default (empty) request message and
    return the response messages; a failed call raises :class:`grpc.aio.AioRpcError`.

    Works for every streaming shape, which makes it the way to probe each RPC of a
    descriptor generically (is it served? what does it answer without input?).
    """
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    codec: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    request: Any = request_class()
    shape = (method.client_streaming, method.server_streaming)
    if shape == (False, False):
        return [await channel.unary_unary(path, **codec)(request, timeout=timeout_s)]
    if shape == (True, False):
        return [await channel.stream_unary(path, **codec)(iter([request]), timeout=timeout_s)]
    stream = (
        channel.unary_stream(path, **codec)(request, timeout=timeout_s)
        if shape == (False, True)
        else channel.stream_stream(path, **codec)(iter([request]), timeout=timeout_s)
    )
    return [reply async for reply in stream]

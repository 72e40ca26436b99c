"""Serve a protobuf service from its descriptor, one RPC at a time.

Every service of the platform is registered through :func:`service_handler`: the
generated service descriptor lists each RPC with its message types and streaming
shape, and the handler serves each one with the servicer's method of the same name
when the servicer has it, or answers UNIMPLEMENTED with a message naming the RPC.

A servicer subclasses the generated servicer base (``ConsentServiceServicer``), so mypy
checks each method's signature against the contract; a method counts as implemented
when the servicer overrides the base's. A public method that matches no RPC of the
service (a misspelt ``DefineCategori``) is refused when the handler is built, that is
at start, instead of leaving the real RPC silently UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

__all__ = [
    "ServicerMismatch",
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


class ServicerMismatch(TypeError):
    """A servicer defines public methods that are no RPC of its service."""


def unimplemented_message(full_method: str) -> str:
    """The status message of an RPC that has no implementation yet
    (``full_method`` is ``package.Service/Method``)."""
    return f"{full_method} is not implemented yet"


def _generated_bases(service: ServiceDescriptor, implementation: object) -> tuple[type, ...]:
    """The generated ``<Service>Servicer`` classes ``implementation`` derives from."""
    name = f"{service.name}Servicer"
    return tuple(
        cls
        for cls in _class_of(implementation).__mro__
        if cls.__name__ == name and cls.__module__.endswith("_pb2_grpc")
    )


def _implementation_of(service: ServiceDescriptor, implementation: object, name: str) -> Any:
    """The servicer's own behaviour for RPC ``name``, or None (absent, or the generated
    base's placeholder, which answers a bare UNIMPLEMENTED)."""
    behavior = getattr(implementation, name, None)
    if not callable(behavior):
        return None
    for base in _generated_bases(service, implementation):
        if getattr(_class_of(implementation), name, None) is getattr(base, name, None):
            return None
    return behavior


def _class_of(implementation: object) -> type:
    # Accept the servicer class as well as an instance (tests ask of the class).
    return implementation if isinstance(implementation, type) else type(implementation)


def check_servicer(service: ServiceDescriptor, implementation: object) -> None:
    """Raise :class:`ServicerMismatch` when ``implementation`` has public methods that
    match no RPC of ``service`` (helpers must be private: ``_name``)."""
    rpcs = {method.name for method in service.methods}
    inherited: set[str] = set()
    for base in (*_generated_bases(service, implementation), object):
        inherited.update(dir(base))
    stray = sorted(
        name
        for name in dir(type(implementation))
        if not name.startswith("_")
        and name not in rpcs
        and name not in inherited
        and callable(getattr(implementation, name, None))
    )
    if stray:
        raise ServicerMismatch(
            f"{type(implementation).__name__} defines {', '.join(stray)}, which "
            f"{'is no RPC' if len(stray) == 1 else 'are no RPCs'} of {service.full_name} "
            f"(RPCs: {', '.join(sorted(rpcs))}); make helpers private with a leading underscore"
        )


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
) -> grpc.RpcMethodHandler[Any, Any]:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    behavior = _implementation_of(service, implementation, method.name)
    if behavior is None:
        behavior = _unimplemented_behavior(
            unimplemented_message(f"{service.full_name}/{method.name}")
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
        if _implementation_of(service, implementation, method.name) is not None
    )


def service_handler(service: ServiceDescriptor, implementation: object) -> grpc.GenericRpcHandler:
    """A handler for every RPC of ``service``, ready for ``server.add_generic_rpc_handlers``.

    Each RPC is served by the method of ``implementation`` with the RPC's name (a
    grpc.aio behaviour: ``async def Method(self, request, context)``, or an async
    generator for a streaming response); an RPC without one answers UNIMPLEMENTED
    with :func:`unimplemented_message`. Raises :class:`ServicerMismatch` when the
    servicer has a public method that is no RPC of the service.
    """
    check_servicer(service, implementation)
    handlers = {
        method.name: _method_handler(service, method, implementation) for method in service.methods
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

"""Rebuilding a gRPC method handler around new behaviour functions.

A server interceptor that must run code around a handler (catch its errors, time it)
has to return a new ``RpcMethodHandler`` of the same shape. Only the shape of the
*response* matters to a wrapper: a unary response is awaited, a streamed one is
iterated; the request (message or iterator) is passed through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]
WrapUnary = Callable[[Callable[..., Any]], UnaryBehavior]
WrapStream = Callable[[Callable[..., Any]], StreamBehavior]

_FACTORIES: dict[tuple[bool, bool], tuple[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def rewrap(
    handler: grpc.RpcMethodHandler[Any, Any], wrap_unary: WrapUnary, wrap_stream: WrapStream
) -> grpc.RpcMethodHandler[Any, Any]:
    """Return a handler like ``handler`` whose behaviour is wrapped by the wrapper that
    fits its response shape."""
    attribute, factory = _FACTORIES[(handler.request_streaming, handler.response_streaming)]
    behavior = getattr(handler, attribute)
    wrap = wrap_stream if handler.response_streaming else wrap_unary
    return factory(
        wrap(behavior),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def iterate_response(result: Any) -> AsyncIterator[Any]:
    """Yield what a streaming behaviour produced: an async iterator, or nothing when the
    behaviour wrote its responses with ``context.write`` and returned an awaitable."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif result is not None:
        await result


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps each method's handler once and reuses the wrapper,
    so steady-state calls allocate nothing. Subclasses say how in :meth:`wrap`.

    A generic handler normally returns the same handler object for a method each time;
    if it ever returns a different one, that one is wrapped and replaces the entry.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[object, grpc.RpcMethodHandler[Any, Any]]] = {}

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler that serves ``method`` in place of ``handler``."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The cached wrapper of the handler found for this call."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        entry = self._wrapped.get(method)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class ClientHook(Protocol):
    """What a client interceptor does, by response shape; :func:`client_interceptors`
    adapts it to grpc.aio's four interceptor kinds."""

    async def unary(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Run a call with a single response (request may be an iterator)."""

    async def stream(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Run a call with a streamed response (request may be an iterator)."""


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, hook: ClientHook) -> None:
        self._hook = hook

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await self._hook.unary(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, hook: ClientHook) -> None:
        self._hook = hook

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._hook.unary(continuation, client_call_details, request_iterator)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, hook: ClientHook) -> None:
        self._hook = hook

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await self._hook.stream(continuation, client_call_details, request)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, hook: ClientHook) -> None:
        self._hook = hook

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await self._hook.stream(continuation, client_call_details, request_iterator)


def client_interceptors(hook: ClientHook) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind around ``hook``.

    grpc.aio files an interceptor under the first kind it implements only, so one
    object implementing all four would silently skip streaming calls.
    """
    return [_UnaryUnary(hook), _StreamUnary(hook), _UnaryStream(hook), _StreamStream(hook)]

"""The delivery servicer's RPCs, one mixin per area; :mod:`..servicer` composes them.

Each mixin subclasses the generated ``DeliveryServiceServicer`` (so mypy checks every
method against the contract), only converts protos and calls its area's handlers.
"""

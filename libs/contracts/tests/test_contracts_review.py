"""Cross-package rules the contract review settled, checked on the .proto sources.

The conventions block of ``common/v1/types.proto`` states them once; these tests keep
every service saying the same thing: a reused idempotency key is ALREADY_EXISTS, the
follower streams can start at the head and say how an all-apps follow is authorised,
and every ErrorInfo reason a comment names exists in ``common.v1.ErrorReason``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2
from pushwarden.delivery.v1 import delivery_pb2
from pushwarden.scheduler.v1 import scheduler_pb2
from pushwarden.segmentation.v1 import segmentation_pb2

PROTO_ROOT = Path(__file__).resolve().parents[3] / "protos"
SERVICES: dict[str, ServiceDescriptor] = {
    "consent": consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
    "segmentation": segmentation_pb2.DESCRIPTOR.services_by_name["SegmentationService"],
    "scheduler": scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"],
    "delivery": delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
}
FOLLOWER_STREAMS = {("consent", "WatchChanges"), ("segmentation", "StreamEvents")}


@pytest.mark.parametrize("area", sorted(SERVICES))
def test_a_reused_key_is_already_exists_everywhere(
    area: str, rpc_comments: Callable[[str], dict[str, str]]
) -> None:
    comments = rpc_comments(area)
    keyed = [
        m
        for m in SERVICES[area].methods
        if "idempotency_key" in m.input_type.fields_by_name
        and m.GetOptions().idempotency_level != m.GetOptions().NO_SIDE_EFFECTS
    ]
    assert keyed or area == "delivery"
    for method in keyed:
        text = comments[method.name]
        assert "ALREADY_EXISTS" in text, f"{area}.{method.name}: reused key not documented"


def test_follower_streams_start_at_head_and_guard_all_apps(
    rpc_comments: Callable[[str], dict[str, str]],
) -> None:
    for area, rpc in FOLLOWER_STREAMS:
        method = SERVICES[area].methods_by_name[rpc]
        assert method.server_streaming
        fields = method.input_type.fields_by_name
        assert {"app_id", "cursor", "from_head", "stop_at_head", "max_batch_size"} <= set(fields)
        assert "PERMISSION_DENIED" in rpc_comments(area)[rpc], f"{area}.{rpc}"
    assert {(a, m.name) for a, s in SERVICES.items() for m in s.methods if m.server_streaming} >= (
        FOLLOWER_STREAMS
    )


def test_error_reasons_named_in_comments_exist(
    rpc_comments: Callable[[str], dict[str, str]],
) -> None:
    """An UPPER_SNAKE name in an RPC comment is a status code, an ErrorReason, a value
    of a contract enum or a schedule mode; anything else is a misspelt reason."""
    reason_names = types_pb2.ErrorReason.DESCRIPTOR.values_by_name
    known = {name.removeprefix("ERROR_REASON_") for name in reason_names}
    files = [types_pb2.DESCRIPTOR] + [s.file for s in SERVICES.values()]
    enum_values: set[str] = set()
    seen: set[str] = set()
    while files:
        file = files.pop()
        if file.name in seen:
            continue
        seen.add(file.name)
        files.extend(file.dependencies)
        for enum in file.enum_types_by_name.values():
            enum_values.update(enum.values_by_name)
    # A comment may name a value by any tail of its full name (OPT_IN, DEFAULT_ZONE).
    suffixes = {
        "_".join(parts[i:])
        for parts in (v.split("_") for v in enum_values)
        for i in range(1, len(parts))
    }
    codes = {code.name for code in grpc.StatusCode}
    allowed = (
        known | codes | suffixes | enum_values | {"LOCAL_TIME", "BEST_TIME", "NO_SIDE_EFFECTS"}
    )
    named: set[str] = set()
    for area in SERVICES:
        for text in rpc_comments(area).values():
            named.update(re.findall(r"\b([A-Z]+(?:_[A-Z]+)+)\b", text))
    assert {"IDEMPOTENCY_KEY_REUSED", "APP_NOT_ALLOWED", "CURSOR_EXPIRED"} <= named
    assert named <= allowed, sorted(named - allowed)


def test_error_domain_matches_the_runtime() -> None:
    from pushwarden.runtime.errors import ERROR_DOMAIN

    text = (PROTO_ROOT / "pushwarden" / "common" / "v1" / "types.proto").read_text("utf-8")
    assert f'domain "{ERROR_DOMAIN}"' in text

"""The generated descriptors carry the contract the design asks for.

Checked on the descriptors the services will actually load, not on the .proto
text: every RPC of the API sketch with its streaming shape, pagination on every
list, an idempotency field on every mutating RPC that is not naturally
idempotent, `app_id` on every request, typed messages (no Struct/Any, no bytes,
one free-form string map), and batch RPCs that carry many items.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)

from pushwarden.common.v1 import content_pb2, decision_pb2, policy_pb2, types_pb2, values_pb2
from pushwarden.consent.v1 import consent_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import delivery_pb2
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.scheduler.v1 import messages_pb2 as scheduler_messages
from pushwarden.scheduler.v1 import resources_pb2 as scheduler_resources
from pushwarden.scheduler.v1 import scheduler_pb2
from pushwarden.segmentation.v1 import messages_pb2 as segmentation_messages
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_resources
from pushwarden.segmentation.v1 import segmentation_pb2

FILES: tuple[FileDescriptor, ...] = tuple(
    m.DESCRIPTOR
    for m in (
        types_pb2,
        values_pb2,
        policy_pb2,
        content_pb2,
        decision_pb2,
        consent_pb2,
        consent_messages,
        consent_resources,
        segmentation_pb2,
        segmentation_messages,
        segmentation_resources,
        scheduler_pb2,
        scheduler_messages,
        scheduler_resources,
        delivery_pb2,
        delivery_messages,
        delivery_resources,
    )
)

SERVICES: dict[str, ServiceDescriptor] = {
    "pushwarden.consent.v1.ConsentService": consent_pb2.DESCRIPTOR.services_by_name[
        "ConsentService"
    ],
    "pushwarden.segmentation.v1.SegmentationService": segmentation_pb2.DESCRIPTOR.services_by_name[
        "SegmentationService"
    ],
    "pushwarden.scheduler.v1.SchedulerService": scheduler_pb2.DESCRIPTOR.services_by_name[
        "SchedulerService"
    ],
    "pushwarden.delivery.v1.DeliveryService": delivery_pb2.DESCRIPTOR.services_by_name[
        "DeliveryService"
    ],
}

UNARY, SERVER_STREAM = "unary", "server-stream"

# The "API sketch" of DESIGN.md, with each RPC's shape.
API_SKETCH: dict[str, dict[str, str]] = {
    "pushwarden.consent.v1.ConsentService": {
        **dict.fromkeys(
            [
                "RegisterDevice",
                "UpdateDevice",
                "UnregisterDevice",
                "InvalidateDevice",
                "ListDevices",
                "DefineCategory",
                "ListCategories",
                "RecordConsent",
                "GetConsentState",
                "SetPreferences",
                "GetPreferences",
                "CheckEligibility",
                "GetLedger",
                "ExportUserData",
                "EraseUser",
                "RecordPermissionPrompt",
                "GetOptInFunnel",
                "GetAudienceHealth",
            ],
            UNARY,
        ),
        "WatchChanges": SERVER_STREAM,
    },
    "pushwarden.segmentation.v1.SegmentationService": {
        **dict.fromkeys(
            [
                "UpsertProfiles",
                "TrackEvents",
                "CreateSegment",
                "GetSegment",
                "ListSegments",
                "DeleteSegment",
                "CountSegment",
                "CheckMembership",
                "CreateList",
                "AddToList",
                "RemoveFromList",
            ],
            UNARY,
        ),
        "EvaluateSegment": SERVER_STREAM,
        "StreamEvents": SERVER_STREAM,
    },
    "pushwarden.scheduler.v1.SchedulerService": dict.fromkeys(
        [
            "SendTransactional",
            "CreateCampaign",
            "StartCampaign",
            "PauseCampaign",
            "ResumeCampaign",
            "CancelCampaign",
            "GetCampaign",
            "ListCampaigns",
            "PreviewCampaign",
            "ExplainDecision",
            "CreateTrigger",
            "ListTriggers",
            "SetTriggerEnabled",
            "SetPolicy",
            "GetPolicy",
        ],
        UNARY,
    ),
    "pushwarden.delivery.v1.DeliveryService": dict.fromkeys(
        ["Deliver", "GetDelivery", "RecordAssignments", "ReportEngagement", "GetCampaignStats"],
        UNARY,
    ),
}

# Mutating RPCs that are not naturally idempotent: each needs a retry key.
NEEDS_KEY = {
    "RecordConsent",
    "RecordPermissionPrompt",
    "TrackEvents",
    "CreateSegment",
    "CreateList",
    "SendTransactional",
    "CreateCampaign",
    "CreateTrigger",
    "Deliver",
    "ReportEngagement",
}
# Batch RPCs whose idempotency is a per-item id: request field -> item id field.
PER_ITEM_KEYS = {
    "TrackEvents": ("events", "event_id"),
    "Deliver": ("sends", "send_id"),
    "ReportEngagement": ("events", "event_id"),
}
# Batch RPCs of the sketch: request field that carries the items.
BATCHES = {
    "CheckEligibility": "user_ids",
    "CheckMembership": "user_ids",
    "CheckErasure": "user_ids",
    "BatchGetCategories": "category_ids",
    "UpsertProfiles": "profiles",
    "TrackEvents": "events",
    "Deliver": "sends",
    "RecordAssignments": "assignments",
    "ReportEngagement": "events",
}
READ_PREFIXES = (
    "Get",
    "BatchGet",
    "List",
    "Check",
    "Count",
    "Evaluate",
    "Preview",
    "Explain",
    "Watch",
    "Stream",
    "Export",
)
IdempotencyLevel = descriptor_pb2.MethodOptions.IdempotencyLevel
FORBIDDEN_TYPES = {
    "google.protobuf.Struct",
    "google.protobuf.Any",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
}


def all_methods() -> Iterator[MethodDescriptor]:
    for service in SERVICES.values():
        yield from service.methods


def all_messages() -> Iterator[Descriptor]:
    def walk(message: Descriptor) -> Iterator[Descriptor]:
        yield message
        for nested in message.nested_types:
            yield from walk(nested)

    for file in FILES:
        for message in file.message_types_by_name.values():
            yield from walk(message)


def all_enums() -> Iterator[EnumDescriptor]:
    for file in FILES:
        yield from file.enum_types_by_name.values()
    for message in all_messages():
        yield from message.enum_types


def shape(method: MethodDescriptor) -> str:
    assert not method.client_streaming, f"{method.full_name} must not be client-streaming"
    return SERVER_STREAM if method.server_streaming else UNARY


def level(method: MethodDescriptor) -> str:
    return IdempotencyLevel.Name(method.GetOptions().idempotency_level)


@pytest.mark.parametrize("service_name", sorted(API_SKETCH))
def test_every_sketch_rpc_exists_with_its_shape(service_name: str) -> None:
    service = SERVICES[service_name]
    assert service.full_name == service_name
    actual = {m.name: shape(m) for m in service.methods}
    for rpc, expected in API_SKETCH[service_name].items():
        assert rpc in actual, f"{service_name}.{rpc} missing"
        assert actual[rpc] == expected, f"{service_name}.{rpc}: {actual[rpc]} != {expected}"


def test_request_and_response_names_follow_the_rpc() -> None:
    for method in all_methods():
        assert method.input_type.name == f"{method.name}Request", method.full_name
        assert method.output_type.name == f"{method.name}Response", method.full_name


def test_every_request_is_app_scoped() -> None:
    for method in all_methods():
        field = method.input_type.fields_by_name.get("app_id")
        assert field is not None, f"{method.full_name} has no app_id"
        assert field.type == FieldDescriptor.TYPE_STRING


def test_lists_and_paged_gets_carry_page_tokens() -> None:
    paged = [m for m in all_methods() if m.name.startswith("List")]
    paged.append(SERVICES["pushwarden.consent.v1.ConsentService"].methods_by_name["GetLedger"])
    assert len(paged) >= 8
    for method in paged:
        request, response = method.input_type.fields_by_name, method.output_type.fields_by_name
        assert {"page_size", "page_token"} <= set(request), method.full_name
        assert "next_page_token" in response, method.full_name


def test_idempotency_is_declared_and_keyed() -> None:
    unknown = set()
    for method in all_methods():
        lvl = level(method)
        is_read = method.name.startswith(READ_PREFIXES)
        assert (lvl == "NO_SIDE_EFFECTS") == is_read, f"{method.full_name} is {lvl}"
        if lvl == "IDEMPOTENCY_UNKNOWN":
            unknown.add(method.name)
    assert unknown == NEEDS_KEY
    for method in all_methods():
        if method.name not in NEEDS_KEY:
            continue
        request = method.input_type
        if method.name in PER_ITEM_KEYS:
            items, key = PER_ITEM_KEYS[method.name]
            field = request.fields_by_name[items]
            assert field.is_repeated
            assert field.message_type is not None
            assert key in field.message_type.fields_by_name, method.full_name
        else:
            assert "idempotency_key" in request.fields_by_name, method.full_name


def test_batch_rpcs_carry_many_items_and_answer_per_item() -> None:
    by_name = {m.name: m for m in all_methods()}
    for rpc, items in BATCHES.items():
        method = by_name[rpc]
        assert method.input_type.fields_by_name[items].is_repeated, rpc
        assert any(f.is_repeated for f in method.output_type.fields), rpc


def test_streams_resume_from_cursors() -> None:
    streams = [m for m in all_methods() if m.server_streaming]
    assert {m.name for m in streams} == {"WatchChanges", "EvaluateSegment", "StreamEvents"}
    for method in streams:
        assert "cursor" in method.input_type.fields_by_name, method.full_name
        assert "cursor" in method.output_type.fields_by_name, method.full_name
    evaluate = next(m for m in streams if m.name == "EvaluateSegment")
    assert "as_of" in evaluate.input_type.fields_by_name
    assert "as_of" in evaluate.output_type.fields_by_name


def test_deliver_never_carries_device_tokens() -> None:
    send = delivery_resources.Send.DESCRIPTOR
    seen: set[str] = set()

    def names(message: Descriptor) -> Iterator[str]:
        if message.full_name in seen:
            return
        seen.add(message.full_name)
        for field in message.fields:
            yield field.name
            if field.message_type is not None:
                yield from names(field.message_type)

    assert not {n for n in names(send) if "token" in n}
    assert {
        "user_id",
        "category_id",
        "topic_id",
        "campaign_id",
        "variant_id",
        "priority",
        "expires_at",
        "content",
    } <= set(send.fields_by_name)


def test_messages_are_typed() -> None:
    free_form = []
    for message in all_messages():
        for field in message.fields:
            where = f"{message.full_name}.{field.name}"
            assert field.type != FieldDescriptor.TYPE_BYTES, f"{where} is bytes"
            if field.message_type is not None:
                assert field.message_type.full_name not in FORBIDDEN_TYPES, where
                entry = field.message_type
                if entry.GetOptions().map_entry:
                    value = entry.fields_by_name["value"]
                    if value.type == FieldDescriptor.TYPE_STRING:
                        free_form.append(where)
    assert free_form == ["pushwarden.common.v1.Content.custom_data"]


def test_only_well_known_types_are_imported() -> None:
    for file in FILES:
        for dependency in file.dependencies:
            name = dependency.name
            assert name.startswith(("pushwarden/", "google/protobuf/")), name
            assert not name.endswith(("/struct.proto", "/any.proto")), name


def test_enum_zero_values_are_unspecified() -> None:
    enums = list(all_enums())
    assert len(enums) > 30
    for enum in enums:
        zero = enum.values_by_number[0]
        assert zero.name.endswith("_UNSPECIFIED"), enum.full_name


def test_policy_vocabulary_is_complete() -> None:
    reasons = set(decision_pb2.ReasonCode.keys())
    for code in (
        "OPTED_OUT",
        "CATEGORY_OPTED_OUT",
        "NO_PERMISSION",
        "NO_DEVICE",
        "CAPPED",
        "QUIET_HOURS",
        "SUPPRESSED",
        "HOLDOUT",
        "EXPIRED",
        "DUPLICATE",
        "ERASED",
    ):
        assert f"REASON_CODE_{code}" in reasons
    assert set(decision_pb2.Outcome.keys()) >= {"OUTCOME_ALLOW", "OUTCOME_DEFER", "OUTCOME_DROP"}
    cap = decision_pb2.CapDetail.DESCRIPTOR.fields_by_name
    assert {"count", "max_count", "rolling", "calendar", "oldest_leaves_at", "frees_at"} <= set(cap)
    quiet = decision_pb2.QuietHoursDetail.DESCRIPTOR.fields_by_name
    assert {"local_time", "time_zone", "window_ends_at"} <= set(quiet)
    assert set(policy_pb2.CapScope.keys()) >= {
        "CAP_SCOPE_ALL_MARKETING",
        "CAP_SCOPE_CATEGORY",
        "CAP_SCOPE_CAMPAIGN",
    }
    assert set(policy_pb2.FrequencyMode.keys()) >= {
        "FREQUENCY_MODE_NORMAL",
        "FREQUENCY_MODE_DAILY_MAX",
        "FREQUENCY_MODE_WEEKLY_MAX",
        "FREQUENCY_MODE_DIGEST",
    }


def test_messages_round_trip_through_json() -> None:
    """The operator CLI reads definitions from YAML/JSON through the JSON mapping."""
    from google.protobuf import json_format

    campaign = scheduler_resources.Campaign(
        name="spring",
        category_id="promos",
        holdout_basis_points=1000,
        variants=[scheduler_resources.Variant(variant_id="A", weight=100)],
    )
    campaign.schedule.local_time.time.hours = 9
    campaign.audience.include_segment_ids.append("active")
    text = json_format.MessageToJson(campaign)
    assert json_format.Parse(text, scheduler_resources.Campaign()) == campaign
    rule = segmentation_resources.Rule()
    rule.all.rules.add().negate.list.list_id = "suppressed"
    assert rule.WhichOneof("node") == "all"
    assert consent_messages.CheckEligibilityRequest(user_ids=["a"] * 3).user_ids[2] == "a"
    assert delivery_messages.GetCampaignStatsResponse().total.lift.absolute_lift_ci.level == 0
    assert segmentation_messages.EvaluateSegmentRequest().page_size == 0
    assert scheduler_messages.ExplainDecisionResponse().decision.trace.steps == []
    assert consent_resources.Device().status == consent_resources.DEVICE_STATUS_UNSPECIFIED


def test_policy_library_names_map_onto_the_contract() -> None:
    """The policy library's vocabulary converts to the contract by name, with no gaps."""
    from pushwarden.policy import model, trace, zones

    pairs = [
        (trace.Outcome, decision_pb2.Outcome, "OUTCOME_"),
        (trace.Reason, decision_pb2.ReasonCode, "REASON_CODE_"),
        (trace.Check, decision_pb2.Check, "CHECK_"),
        (zones.ZoneSource, decision_pb2.TimeZoneSource, "TIME_ZONE_SOURCE_"),
        (model.CapScope, policy_pb2.CapScope, "CAP_SCOPE_"),
        (model.CalendarWindow, policy_pb2.CalendarPeriod, "CALENDAR_PERIOD_"),
        (model.CapAction, policy_pb2.OnExceed, "ON_EXCEED_"),
        (model.FrequencyPreference, policy_pb2.FrequencyMode, "FREQUENCY_MODE_"),
        (model.DigestPeriod, policy_pb2.DigestPeriod, "DIGEST_PERIOD_"),
        (model.MessageKind, types_pb2.CategoryKind, "CATEGORY_KIND_"),
    ]
    for library_enum, proto_enum, prefix in pairs:
        names = set(proto_enum.keys())
        for member in library_enum:
            assert f"{prefix}{member.name}" in names, f"{library_enum.__name__}.{member.name}"


def test_frozen_shapes_of_the_contract_review() -> None:
    """The shapes the freeze review added exist: a regression here is a breaking change."""
    consent = SERVICES["pushwarden.consent.v1.ConsentService"].methods_by_name
    assert {"CheckErasure", "BatchGetCategories"} <= set(consent)
    erased_at = consent_messages.UserErasure.DESCRIPTOR.fields_by_name["erased_at"].message_type
    assert erased_at is not None
    assert erased_at.full_name == "google.protobuf.Timestamp"
    export = consent_messages.ExportUserDataRequest.DESCRIPTOR.fields_by_name
    assert {"page_size", "page_token"} <= set(export)
    assert "next_page_token" in consent_messages.ExportUserDataResponse.DESCRIPTOR.fields_by_name
    verification = consent_messages.LedgerVerification.DESCRIPTOR
    ledger = consent_messages.GetLedgerResponse.DESCRIPTOR.fields_by_name["verification"]
    assert ledger.message_type is verification
    assert {"verified", "broken_at_sequence"} <= set(verification.fields_by_name)
    # The deprecated field is gone and can never come back under its number or name.
    preferences = consent_messages.GetPreferencesResponse.DESCRIPTOR
    assert "app_default_quiet_hours" not in preferences.fields_by_name
    proto = descriptor_pb2.DescriptorProto()
    preferences.CopyToProto(proto)
    assert [(r.start, r.end) for r in proto.reserved_range] == [(2, 3)]
    assert list(proto.reserved_name) == ["app_default_quiet_hours"]

    for request in (
        delivery_messages.RecordAssignmentsRequest.DESCRIPTOR,
        delivery_messages.GetCampaignStatsRequest.DESCRIPTOR,
    ):
        subject = request.oneofs_by_name["subject"]
        assert {f.name for f in subject.fields} == {"campaign_id", "trigger_id"}, request.name
    assert "firing_id" in delivery_resources.Assignment.DESCRIPTOR.fields_by_name
    method = delivery_messages.ConfidenceInterval.DESCRIPTOR.fields_by_name["method"]
    assert method.enum_type is delivery_messages.IntervalMethod.DESCRIPTOR
    assert (
        "INTERVAL_METHOD_NEWCOMBE_HYBRID_SCORE"
        in delivery_messages.IntervalMethod.DESCRIPTOR.values_by_name
    )
    assert "latest_send_at" in delivery_resources.Send.DESCRIPTOR.fields_by_name
    assert "DELIVERY_STATUS_LATE" in delivery_resources.DeliveryStatus.DESCRIPTOR.values_by_name

    membership = segmentation_messages.CheckMembershipRequest.DESCRIPTOR.fields_by_name
    assert "include_suppression_lists" in membership
    answer = segmentation_messages.CheckMembershipResponse.DESCRIPTOR.fields_by_name
    assert {"unknown_segment_ids", "unknown_list_ids"} <= set(answer)
    assert "sequence" in segmentation_resources.Event.DESCRIPTOR.fields_by_name
    assert "deleted_at" in segmentation_resources.Segment.DESCRIPTOR.fields_by_name
    for message in (
        segmentation_resources.ProfileUpdate,
        segmentation_messages.AddToListRequest,
        segmentation_messages.RemoveFromListRequest,
        consent_messages.RegisterDeviceRequest,
        consent_messages.UpdateDeviceRequest,
    ):
        assert "client_time" in message.DESCRIPTOR.fields_by_name, message.DESCRIPTOR.name

    localized = scheduler_messages.SendTransactionalRequest.DESCRIPTOR.fields_by_name["localized"]
    assert localized.message_type is scheduler_resources.LocalizedContent.DESCRIPTOR
    fallback = scheduler_resources.TimeZoneFallback.DESCRIPTOR.fields_by_name
    assert "default_time_zone" in fallback
    assert "REASON_CODE_NO_TIMEZONE" in decision_pb2.ReasonCode.DESCRIPTOR.values_by_name

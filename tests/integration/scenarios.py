"""What the scenarios share: the instant they start at, categories, request builders and
waits, all through the services' contracts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import grpc

from pushwarden.common.v1 import content_pb2, types_pb2, values_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources

from .conftest import APP, Platform
from .harness import eventually

# Monday 1 June 2026, 08:00 UTC: 10:00 in Paris, outside any default quiet hours.
NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
PROMOS = "promos"  # marketing, opted in by default
ORDERS = "orders"  # transactional


def set_up(platform: Platform) -> None:
    """The clock at NOW and the two categories."""
    platform.compose.shift_clock(to=NOW, speed=1.0)
    platform.define_category(PROMOS, types_pb2.CATEGORY_KIND_MARKETING)
    platform.define_category(ORDERS, types_pb2.CATEGORY_KIND_TRANSACTIONAL)


def order_update(
    user: str, key: str, title: str = "Your order shipped"
) -> messages_pb2.SendTransactionalRequest:
    return messages_pb2.SendTransactionalRequest(
        app_id=APP,
        user_id=user,
        category_id=ORDERS,
        idempotency_key=key,
        content=content_pb2.Content(title=title, body="Arrives Tuesday"),
    )


def member_attribute(segment_id: str) -> str:
    """The profile attribute that puts a user in the segment ``segment_id``."""
    return "in_" + segment_id.replace("-", "_")


def join_segment(platform: Platform, segment_id: str, users: Iterable[str]) -> None:
    """``users`` get the attribute that :func:`segment_of`'s segment selects."""
    platform.segmentation.UpsertProfiles(
        seg_messages.UpsertProfilesRequest(
            app_id=APP,
            profiles=[
                seg_resources.ProfileUpdate(
                    user_id=user,
                    set_attributes={
                        member_attribute(segment_id): values_pb2.AttributeValue(string_value="yes")
                    },
                )
                for user in users
            ],
        )
    )


def segment_of(platform: Platform, segment_id: str, users: Iterable[str]) -> None:
    """The segment ``segment_id`` of ``users`` (an attribute of their own per segment)."""
    join_segment(platform, segment_id, users)
    platform.segmentation.CreateSegment(
        seg_messages.CreateSegmentRequest(
            app_id=APP,
            segment=seg_resources.Segment(
                segment_id=segment_id,
                name=segment_id,
                rule=seg_resources.Rule(
                    attribute=seg_resources.AttributePredicate(
                        filter=values_pb2.PropertyFilter(
                            name=member_attribute(segment_id),
                            operator=values_pb2.OPERATOR_EQ,
                            value=values_pb2.AttributeValue(string_value="yes"),
                        )
                    )
                ),
            ),
        )
    )


def variant(variant_id: str, weight: int, title: str) -> resources_pb2.Variant:
    return resources_pb2.Variant(
        variant_id=variant_id,
        weight=weight,
        template=resources_pb2.Template(content=content_pb2.Content(title=title, body="Sale")),
    )


def start_campaign(platform: Platform, key: str, campaign: resources_pb2.Campaign) -> str:
    """Create and start ``campaign``; returns its id."""
    created = platform.scheduler.CreateCampaign(
        messages_pb2.CreateCampaignRequest(app_id=APP, campaign=campaign, idempotency_key=key)
    )
    campaign_id = created.campaign.campaign_id
    platform.scheduler.StartCampaign(
        messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
    )
    return campaign_id


def get_campaign(platform: Platform, campaign_id: str) -> resources_pb2.Campaign:
    answer = platform.scheduler.GetCampaign(
        messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
    )
    return answer.campaign


def wait_state(
    platform: Platform,
    campaign_id: str,
    state: resources_pb2.CampaignState.ValueType,
    within_s: float = 60.0,
) -> resources_pb2.Campaign:
    eventually(
        lambda: get_campaign(platform, campaign_id).state == state,
        within_s=within_s,
        what=f"campaign {campaign_id} in state {resources_pb2.CampaignState.Name(state)}",
    )
    return get_campaign(platform, campaign_id)


def decisions(platform: Platform, campaign_id: str) -> list[resources_pb2.ContactRecord]:
    records: list[resources_pb2.ContactRecord] = []
    token = ""
    while True:
        page = platform.scheduler.ListCampaignDecisions(
            messages_pb2.ListCampaignDecisionsRequest(
                app_id=APP, campaign_id=campaign_id, page_size=1000, page_token=token
            )
        )
        records.extend(page.records)
        token = page.next_page_token
        if not token:
            return records


def delivery_status(platform: Platform, send_id: str) -> int:
    """The delivery's status, or UNSPECIFIED while delivery does not know the send."""
    try:
        answer = platform.delivery.GetDelivery(
            delivery_messages.GetDeliveryRequest(app_id=APP, send_id=send_id)
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return delivery_resources.DELIVERY_STATUS_UNSPECIFIED
        raise
    return int(answer.delivery.status)


def wait_delivered(platform: Platform, send_id: str, within_s: float = 60.0) -> None:
    eventually(
        lambda: delivery_status(platform, send_id) == delivery_resources.DELIVERY_STATUS_DELIVERED,
        within_s=within_s,
        what=f"delivery of {send_id}",
    )


def opt_out_of_marketing(platform: Platform, user: str, key: str) -> None:
    platform.consent.RecordConsent(
        consent_messages.RecordConsentRequest(
            app_id=APP,
            user_id=user,
            scope=consent_resources.ConsentScope(
                kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
            ),
            action=consent_resources.CONSENT_ACTION_OPT_OUT,
            source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
            idempotency_key=key,
        )
    )

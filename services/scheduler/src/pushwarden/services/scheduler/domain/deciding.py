"""From consent's answers and the contact history to the policy library's inputs, and
the decisions for one user's due intents (pure).

Consent answers per category; a user with several due intents of several categories
gets one :class:`pushwarden.policy.Recipient` whose category and topic opt-outs are the
union of the answers, so that one arbitration decides all of them against one history:
an allowed intent counts for the ones after it, and caps stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pushwarden.common.v1 import decision_pb2
from pushwarden.consent.v1 import messages_pb2
from pushwarden.policy import (
    Category,
    ContactEntry,
    ContactHistory,
    Decision,
    FrequencyPreference,
    Message,
    MessageKind,
    Recipient,
    Rules,
    arbitrate,
    decide,
)
from pushwarden.policy.clock import NEVER, next_quiet
from pushwarden.policy.zones import resolve_zone
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.services.scheduler.domain.intents import ClaimedIntent, PastContact
from pushwarden.services.scheduler.domain.policy import frequency_from_proto, quiet_hours_from_proto

_SUBSCRIBED = messages_pb2.TOPIC_STATE_SUBSCRIBED
_DEVICE_SOURCE = decision_pb2.TIME_ZONE_SOURCE_DEVICE


@dataclass(frozen=True, slots=True)
class Due:
    """One due intent with what consent said about its user for its category."""

    intent: ClaimedIntent
    kind: str
    opt_out_allowed: bool
    facts: messages_pb2.UserEligibility


def recipient_for(
    user_id: str, dues: Sequence[Due], policy: resources_pb2.Policy, *, suppressed: bool = False
) -> Recipient:
    """The policy's view of one user from consent's answers (``dues`` all of that user).
    ``suppressed`` adds what consent does not know: a suppression list of the app."""
    facts = dues[0].facts
    consent = facts.consent
    counts = facts.device_counts
    category_opt_outs = frozenset(
        due.intent.category_id for due in dues if not due.facts.consent.category_allowed
    )
    topic_opt_outs = frozenset(
        due.intent.topic_id
        for due in dues
        if due.intent.topic_id and due.facts.topic_state != _SUBSCRIBED
    )
    frequency, frequency_max, digest = (
        frequency_from_proto(facts.frequency, policy)
        if facts.HasField("frequency")
        else (FrequencyPreference.NORMAL, 0, None)
    )
    zone = facts.time_zone or None
    from_device = facts.time_zone_source == _DEVICE_SOURCE
    return Recipient(
        user_id=user_id,
        push_consent=not consent.channel_opted_out,
        marketing_opt_out=consent.marketing_opted_out,
        category_opt_outs=category_opt_outs,
        topic_opt_outs=topic_opt_outs,
        # No device at all is NO_DEVICE; devices that all lack permission, NO_PERMISSION.
        os_permission=counts.usable > 0 or counts.without_permission == 0,
        usable_devices=counts.usable,
        zone=None if from_device else zone,
        device_zone=zone if from_device else None,
        quiet_hours=quiet_hours_from_proto(facts.quiet_hours)
        if facts.HasField("quiet_hours")
        else None,
        frequency=frequency,
        digest=digest,
        suppressed=consent.suppressed or suppressed,
        erased=consent.erased,
        frequency_max=frequency_max,
    )


def message_for(due: Due) -> Message:
    """The policy's view of one intent."""
    intent = due.intent
    if intent.campaign_id is not None:
        message_id = f"c:{intent.campaign_id}:{intent.variant_id}"
    elif intent.trigger_id is not None:
        message_id = f"t:{intent.trigger_id}"
    else:
        message_id = intent.send_id
    return Message(
        message_id=message_id,
        category=Category(
            intent.category_id,
            MessageKind.TRANSACTIONAL if due.kind == "TRANSACTIONAL" else MessageKind.MARKETING,
            opt_out_allowed=due.opt_out_allowed or due.kind == "MARKETING",
        ),
        campaign_id=intent.campaign_id,
        trigger_id=intent.trigger_id,
        topic_id=intent.topic_id or None,
        priority=intent.priority,
        expires_at=intent.expires_at,
        respects_quiet_hours=intent.respect_quiet_hours,
        send_key=intent.send_id,
    )


def history_of(contacts: Sequence[PastContact]) -> ContactHistory:
    """The policy's view of a user's contact history."""
    return ContactHistory(
        ContactEntry(
            at=contact.at,
            category_id=contact.category_id,
            kind=MessageKind(contact.kind),
            campaign_id=contact.campaign_id,
            send_key=contact.send_id,
            trigger_id=contact.trigger_id,
        )
        for contact in contacts
    )


def decide_user(
    dues: Sequence[Due], recipient: Recipient, history: ContactHistory, rules: Rules, now: datetime
) -> list[tuple[Due, Decision]]:
    """Every due intent of one user decided now: one alone directly, several by the
    library's arbitration (priority, then earliest expiry), each against the history
    plus the sends allowed before it."""
    if len(dues) == 1:
        return [(dues[0], decide(message_for(dues[0]), recipient, history, rules, now))]
    messages = [message_for(due) for due in dues]
    by_message = {id(message): due for message, due in zip(messages, dues, strict=True)}
    return [
        (by_message[id(result.message)], result.decision)
        for result in arbitrate(messages, recipient, history, rules, now)
    ]


def latest_send_at(
    recipient: Recipient, rules: Rules, message: Message, now: datetime
) -> datetime | None:
    """The start of the user's next quiet window, for a send bound by quiet hours (every
    marketing send, and transactional ones that opted in); None otherwise or when no
    window ever comes."""
    if message.kind is MessageKind.TRANSACTIONAL and not message.respects_quiet_hours:
        return None
    _, zone = resolve_zone(recipient.zone, recipient.device_zone, rules.default_zone)
    if zone is None:
        return None
    quiet = recipient.quiet_hours if recipient.quiet_hours is not None else rules.quiet_hours
    if not quiet.windows:
        return None
    start = next_quiet(quiet, zone, now)
    return None if start == NEVER else start


def zone_name(recipient: Recipient, rules: Rules) -> str:
    """The IANA zone the policy used for the recipient ('' when none)."""
    _, zone = resolve_zone(recipient.zone, recipient.device_zone, rules.default_zone)
    return "" if zone is None else zone.key

"""Arbitration: which of several pending messages for one user goes now.

Pending marketing messages compete for the budget the caps leave; the winner order is
priority (higher first), then earliest expiry (none last), then ``message_id`` and the
original position as a stable tiebreak. Each message is decided in that order against the
history plus the sends already picked, so the losers get what the caps say for them:
DEFER to when the budget frees, or DROP where a rule drops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from .engine import decide
from .history import ContactHistory, as_history
from .model import ContactEntry, Message, Recipient, Rules
from .trace import Decision, Outcome

__all__ = ["Arbitration", "arbitrate", "arbitration_order"]

_NEVER = datetime.max.replace(tzinfo=UTC)


class Arbitration(NamedTuple):
    """One pending message and what it gets; ``rank`` is its place in the order."""

    message: Message
    decision: Decision
    rank: int


def arbitration_order(messages: Sequence[Message]) -> list[int]:
    """Indexes of ``messages`` in arbitration order."""

    def key(index: int) -> tuple[int, datetime, str, int]:
        message = messages[index]
        expiry = message.expires_at if message.expires_at is not None else _NEVER
        return (-message.priority, expiry, message.message_id, index)

    return sorted(range(len(messages)), key=key)


def arbitrate(
    messages: Sequence[Message],
    recipient: Recipient,
    history: ContactHistory | Iterable[ContactEntry],
    rules: Rules,
    now: datetime,
) -> list[Arbitration]:
    """Decide every pending message for one recipient, best first.

    A message that is allowed is assumed sent at ``now`` for the messages after it, so at
    most the remaining budget is allowed in total. Transactional messages are decided in
    the same order and do not use the marketing budget unless a rule counts them.
    """
    hist = as_history(history)
    results: list[Arbitration] = []
    for rank, index in enumerate(arbitration_order(messages)):
        message = messages[index]
        decision = decide(message, recipient, hist, rules, now)
        results.append(Arbitration(message, decision, rank))
        if decision.outcome is Outcome.ALLOW:
            sent = ContactEntry(
                at=now,
                category_id=message.category.category_id,
                kind=message.category.kind,
                campaign_id=message.campaign_id,
                send_key=message.send_key,
                trigger_id=message.trigger_id,
            )
            hist = hist.with_sends((sent,))
    return results

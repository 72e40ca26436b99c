"""GDPR: export a user from every service, erase a user through consent.

The export reads ExportUserData of consent, segmentation, the scheduler and delivery,
every page of each (a complete export reads until ``next_page_token`` is empty), into
one JSON document keyed by service, each part in its contract's JSON mapping.

Erasure goes through consent alone (EraseUser): consent deletes what it holds, keeps
the suppression record and publishes ERASED on its change feed, from which the other
services erase. ``--wait`` then polls the other services' exports until they hold
nothing about the user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

from pushwarden.cli.connection import Clients
from pushwarden.cli.errors import CliError
from pushwarden.cli.render import message_dict
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.scheduler.v1 import messages_pb2 as scheduler_messages
from pushwarden.segmentation.v1 import messages_pb2 as segmentation_messages

__all__ = ["PAGE_SIZE", "erase_user", "export_user", "leftovers"]

PAGE_SIZE = 1000
# Per service: the repeated fields that come in pages (merged across pages).
_PAGED = {
    "consent": ("ledger", "prompts"),
    "segmentation": ("events",),
    "scheduler": ("contacts",),
    "delivery": ("deliveries", "engagement"),
}


async def _all_pages(
    fetch: Callable[[str], Awaitable[Any]], part: Callable[[Any], Message], paged: tuple[str, ...]
) -> dict[str, Any]:
    """Every page of one service's export merged: the paged lists concatenated, the
    rest from the first page."""
    merged: dict[str, Any] | None = None
    token = ""
    while True:
        answer = await fetch(token)
        page = message_dict(part(answer))
        page.pop("next_page_token", None)
        if merged is None:
            merged = page
            for name in paged:
                merged.setdefault(name, [])
        else:
            for name in paged:
                merged[name].extend(page.get(name, []))
        token = answer.next_page_token
        if not token:
            return merged


async def _consent(clients: Clients, app_id: str, user_id: str) -> dict[str, Any]:
    def fetch(token: str) -> Awaitable[consent_messages.ExportUserDataResponse]:
        return clients.call(
            "consent",
            clients.consent.ExportUserData,
            consent_messages.ExportUserDataRequest(
                app_id=app_id, user_id=user_id, page_size=PAGE_SIZE, page_token=token
            ),
        )

    return await _all_pages(fetch, lambda answer: answer.export, _PAGED["consent"])


async def _segmentation(clients: Clients, app_id: str, user_id: str) -> dict[str, Any]:
    def fetch(token: str) -> Awaitable[segmentation_messages.ExportUserDataResponse]:
        return clients.call(
            "segmentation",
            clients.segmentation.ExportUserData,
            segmentation_messages.ExportUserDataRequest(
                app_id=app_id, user_id=user_id, page_size=PAGE_SIZE, page_token=token
            ),
        )

    return await _all_pages(fetch, lambda answer: answer, _PAGED["segmentation"])


async def _scheduler(clients: Clients, app_id: str, user_id: str) -> dict[str, Any]:
    def fetch(token: str) -> Awaitable[scheduler_messages.ExportUserDataResponse]:
        return clients.call(
            "scheduler",
            clients.scheduler.ExportUserData,
            scheduler_messages.ExportUserDataRequest(
                app_id=app_id, user_id=user_id, page_size=PAGE_SIZE, page_token=token
            ),
        )

    return await _all_pages(fetch, lambda answer: answer, _PAGED["scheduler"])


async def _delivery(clients: Clients, app_id: str, user_id: str) -> dict[str, Any]:
    def fetch(token: str) -> Awaitable[delivery_messages.ExportUserDataResponse]:
        return clients.call(
            "delivery",
            clients.delivery.ExportUserData,
            delivery_messages.ExportUserDataRequest(
                app_id=app_id, user_id=user_id, page_size=PAGE_SIZE, page_token=token
            ),
        )

    return await _all_pages(fetch, lambda answer: answer, _PAGED["delivery"])


_EXPORTERS = {
    "consent": _consent,
    "segmentation": _segmentation,
    "scheduler": _scheduler,
    "delivery": _delivery,
}


async def export_user(
    clients: Clients, app_id: str, user_id: str, services: tuple[str, ...] = tuple(_EXPORTERS)
) -> dict[str, Any]:
    """One document with every service's export of the user (the services asked at once)."""
    parts = await asyncio.gather(
        *(_EXPORTERS[service](clients, app_id, user_id) for service in services)
    )
    return {
        "app_id": app_id,
        "user_id": user_id,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **dict(zip(services, parts, strict=True)),
    }


# Per service: what an export holds about the user (lists, and records counted as 0 or 1).
_ITEMS = {
    "consent": ("devices", "consent", "preferences", "ledger", "prompts"),
    "segmentation": ("profile", "events", "list_ids"),
    "scheduler": ("contacts",),
    "delivery": ("deliveries", "engagement"),
}


def item_counts(document: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(service, item, count) for everything an export holds (an absent item is 0)."""
    rows: list[tuple[str, str, int]] = []
    for service, items in _ITEMS.items():
        part = document.get(service)
        if not isinstance(part, dict):
            continue
        for name in items:
            value = part.get(name)
            count = len(value) if isinstance(value, list) else int(bool(value))
            rows.append((service, name, count))
    return rows


def leftovers(document: dict[str, Any]) -> list[str]:
    """What the services other than consent still hold about the user (``service.item``)."""
    return [
        f"{service}.{name}"
        for service, name, count in item_counts(document)
        if service != "consent" and count
    ]


async def erase_user(
    clients: Clients, app_id: str, user_id: str, *, wait_s: float | None, interval_s: float = 0.5
) -> tuple[consent_messages.EraseUserResponse, list[str]]:
    """EraseUser at consent (as a support agent); with ``wait_s``, then poll the other
    services' exports until nothing is left (or fail naming what is left)."""
    answer = await clients.call(
        "consent",
        clients.consent.EraseUser,
        consent_messages.EraseUserRequest(
            app_id=app_id,
            user_id=user_id,
            actor_type=consent_resources.ACTOR_TYPE_SUPPORT_AGENT,
        ),
    )
    if wait_s is None:
        return answer, []
    others = ("segmentation", "scheduler", "delivery")
    deadline = time.monotonic() + wait_s
    while True:
        left = leftovers(await export_user(clients, app_id, user_id, others))
        if not left:
            return answer, list(others)
        if time.monotonic() > deadline:
            raise CliError(
                f"user {user_id} erased at consent, but after {wait_s:g} s still held: "
                + ", ".join(left)
            )
        await asyncio.sleep(interval_s)

"""`make demo`: one simulated day of a shop app on the whole platform, on this machine.

Run: .venv/bin/python tools/demo.py [--users 5000] [--chart docs/demo-chart.png] [--seed 7]
[--timings] (the wall time of each phase: start-up, seeding per service, the day, ...)

What it does, by itself:

1. starts the platform as ``make run`` does (``pushwarden.runtime.supervisor``: consent,
   segmentation, the fake APNs and FCM, delivery with the sandbox's demo credentials, the
   scheduler), on free ports, SQLite in a temporary directory, every service on one clock
   file (``PUSHWARDEN_<SERVICE>_CLOCK_FILE``);
2. seeds the app ``shop`` through the RPCs: users across a dozen IANA zones with an iPhone
   (APNs) or an Android phone (FCM), some without permission, some opted out of marketing,
   some with quiet hours of their own or an opt-down to one marketing push a day, profiles
   with attributes and past behaviour events, two segments and a suppression list; the app
   policy (two marketing pushes per rolling 24 h, quiet hours 21:00-08:00, a jitter);
3. runs the day by moving the clock in 20-minute steps (``--step``) from 21:00 UTC the
   evening before: the "Summer sale" at 10:00 local time in every zone (two variants and
   a 10% holdout), a cart-abandonment trigger (purchases within the hour cancel some), transactional
   order updates all along, a flash sale to the pro plan in the afternoon, users opting
   out mid-campaign, tokens the fake APNs reports dead (410), engagement reported to
   delivery;
4. prints a report for people (who got what, who was held back and why, campaign
   statistics with the holdout lift) from the services' own answers
   (``ListCampaignDecisions``, ``GetCampaign``, ``GetCampaignStats``, ``ExportUserData``,
   ``GetDelivery`` and the fakes' record), writes a PNG chart of sends per simulated hour
   per outcome, and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pushwarden.common.v1 import content_pb2, decision_pb2, policy_pb2, types_pb2, values_pb2
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import delivery_pb2_grpc
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.runtime.clock import FileClock, shift_clock_file
from pushwarden.runtime.servicetest import free_port
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2_grpc
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.segmentation.v1 import segmentation_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
APP = "shop"  # the app the supervisor's sandbox credentials deliver for
PROMOS, ORDERS = "promos", "orders"
# The simulated day: 21:00 UTC on Monday 1 June 2026 (09:00 on Tuesday in Auckland) to
# 20:00 UTC on Tuesday (13:00 in Los Angeles), the sale at 10:00 local on Tuesday.
START = datetime(2026, 6, 1, 21, 0, tzinfo=UTC)
END = datetime(2026, 6, 2, 20, 0, tzinfo=UTC)
SALE_DAY, SALE_HOUR = (2026, 6, 2), 10
FLASH_AT = datetime(2026, 6, 2, 14, 0, tzinfo=UTC)
OPT_OUT_AT = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
CAP_PER_24H = 2
JITTER = timedelta(minutes=10)
HOLDOUT_BP = 1000
# Seeding: RPCs in flight at once (consent has no batch RPC for devices), and the batch
# size of the RPCs that take up to 1,000 items.
CONSENT_IN_FLIGHT = 48
SEGMENTATION_IN_FLIGHT = 2
SEED_BATCH = 1000
# A dozen zones, weighted roughly as a European-American shop's users are.
ZONES: dict[str, int] = {
    "Pacific/Auckland": 3,
    "Australia/Sydney": 5,
    "Asia/Tokyo": 7,
    "Asia/Singapore": 5,
    "Asia/Kolkata": 6,
    "Asia/Dubai": 4,
    "Europe/Berlin": 14,
    "Europe/London": 12,
    "America/Sao_Paulo": 8,
    "America/New_York": 16,
    "America/Chicago": 10,
    "America/Los_Angeles": 10,
}
# Test knobs the integration suite uses too: short polls so a simulated hour takes seconds.
# Only the polls that matter to the day are short: the scheduler's loops notice a clock
# step within 0.1 s; delivery's dispatcher and consent's feed are woken at once by their
# own process's new work, so theirs only pace retries and other replicas' changes (an
# idle poll every 0.05 s cost the scheduler and delivery a third of a core, taken from
# consent while it is being seeded).
FAST: dict[str, dict[str, str]] = {
    "consent": {"FEED_POLL_S": "0.5", "FEED_HEARTBEAT_S": "1", "GRACE_PERIOD_S": "1"},
    "segmentation": {
        "CONSENT_POLL_S": "0.1",
        "STREAM_POLL_S": "0.1",
        "STREAM_HEARTBEAT_S": "1",
        "GRACE_PERIOD_S": "1",
    },
    "delivery": {
        "DISPATCH_POLL_S": "0.25",
        "RETRY_BASE_S": "0.05",
        "RETRY_MAX_S": "0.5",
        "GRACE_PERIOD_S": "1",
    },
    "scheduler": {"DISPATCH_POLL_S": "0.1", "HANDOFF_RETRY_MAX_S": "1", "GRACE_PERIOD_S": "1"},
}
CHILDREN = ("consent", "segmentation", "fake-apns", "fake-fcm", "delivery", "scheduler")
REASONS: dict[int, str] = {
    decision_pb2.REASON_CODE_HOLDOUT: "in the holdout (measures the lift)",
    decision_pb2.REASON_CODE_OPTED_OUT: "opted out of marketing",
    decision_pb2.REASON_CODE_NO_PERMISSION: "no push permission on any device",
    decision_pb2.REASON_CODE_NO_DEVICE: "no usable device",
    decision_pb2.REASON_CODE_CAPPED: "at the cap (2 marketing pushes / 24 h)",
    decision_pb2.REASON_CODE_QUIET_HOURS: "in quiet hours (deferred)",
    decision_pb2.REASON_CODE_FREQUENCY_PREFERENCE: "opted down to 1 push a day",
    decision_pb2.REASON_CODE_SUPPRESSED: "on the suppression list",
    decision_pb2.REASON_CODE_LOCAL_TIME_PASSED: "10:00 local had passed",
    decision_pb2.REASON_CODE_TRIGGER_CANCELLED: "purchased before the reminder",
}
T = TypeVar("T")


def stamp(instant: datetime) -> Timestamp:
    built = Timestamp()
    built.FromDatetime(instant)
    return built


def reason_text(outcome: int, reason: int) -> str:
    if outcome == decision_pb2.OUTCOME_ALLOW:
        return "sent"
    text = REASONS.get(reason)
    if text is None:
        text = (
            decision_pb2.ReasonCode.Name(decision_pb2.ReasonCode.ValueType(reason))
            .removeprefix("REASON_CODE_")
            .lower()
        )
    return text.replace("_", " ")


# ---- the platform -----------------------------------------------------------------------


class Platform:
    """``make run``'s supervisor on free ports, SQLite under ``root``, one clock file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock_file = root / "clock.json"
        self.ports = {name: free_port() for name in CHILDREN}
        self.log = root / "platform.log"
        self.process: subprocess.Popen[bytes] | None = None

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, within_s: float = 120.0) -> None:
        shift_clock_file(self.clock_file, to=START, speed=1.0)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PUSHWARDEN_")  # the demo's platform, not the caller's
        }
        for service, knobs in FAST.items():
            prefix = f"PUSHWARDEN_{service.upper()}_"
            env[prefix + "CLOCK_FILE"] = str(self.clock_file)
            env[prefix + "LOG_LEVEL"] = "WARNING"
            env.update({prefix + key: value for key, value in knobs.items()})
        argv = [sys.executable, "-m", "pushwarden.runtime.supervisor", "--var-dir", str(self.root)]
        for name, port in self.ports.items():
            argv += ["--port", f"{name}={port}"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        deadline = time.monotonic() + within_s
        while "services SERVING" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the platform did not start:\n" + self.tail())
            time.sleep(0.2)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM to the supervisor, which stops its children in order; its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def now(self) -> datetime:
        return FileClock(self.clock_file).now()

    def move_clock(self, to: datetime) -> None:
        shift_clock_file(self.clock_file, to=to)

    def fake(self, name: str, method: str, path: str, body: Any = None) -> Any:
        """A call to a fake provider's /_sandbox/ control routes."""
        context = ssl.create_default_context(cafile=str(self.root / "sandbox" / "sandbox-ca.pem"))
        data = None if body is None else json.dumps(body).encode()
        url = f"https://127.0.0.1:{self.ports[name]}/_sandbox/{path}"
        request = urllib.request.Request(url, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return json.loads(answer.read())


@dataclass
class Stubs:
    consent: consent_pb2_grpc.ConsentServiceAsyncStub
    segmentation: segmentation_pb2_grpc.SegmentationServiceAsyncStub
    scheduler: scheduler_pb2_grpc.SchedulerServiceAsyncStub
    delivery: delivery_pb2_grpc.DeliveryServiceAsyncStub


async def gather_limited(calls: Iterable[Callable[[], Awaitable[T]]], limit: int = 32) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


class Timings:
    """Wall seconds per phase of the run (``--timings`` prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started

    def table(self) -> Table:
        table = Table(title="Where the time went (wall seconds)")
        table.add_column("Phase")
        table.add_column("Seconds", justify="right")
        for name, seconds in self.seconds.items():
            table.add_row(name, f"{seconds:.1f}")
        return table


TIMINGS = Timings()


# ---- the app ----------------------------------------------------------------------------


@dataclass
class User:
    user_id: str
    zone: str
    ios: bool
    token: str
    permission: bool = True
    opted_out: bool = False
    quiet_hours: bool = False
    opt_down: bool = False
    suppressed: bool = False
    plan: str = "free"


@dataclass
class World:
    users: list[User]
    dead: list[User]
    carts: list[tuple[datetime, User, str, str]]  # when, who, cart id, item
    purchases: list[tuple[datetime, User, str]]
    orders: list[tuple[datetime, User]]
    leavers: list[User]
    by_id: dict[str, User] = field(default_factory=dict)


ITEMS = ("running shoes", "a rain jacket", "wireless earbuds", "a yoga mat", "a coffee grinder")


def make_world(count: int, seed: int) -> World:
    rng = random.Random(seed)
    zones = rng.choices(list(ZONES), weights=list(ZONES.values()), k=count)
    users: list[User] = []
    for i, zone in enumerate(zones):
        ios = rng.random() < 0.55
        users.append(
            User(
                user_id=f"u{i:05d}",
                zone=zone,
                ios=ios,
                token=f"{rng.getrandbits(256):064x}"
                if ios
                else f"fcm-{i:05d}-{rng.getrandbits(64):x}",
                permission=rng.random() >= 0.08,
                opted_out=rng.random() < 0.05,
                quiet_hours=rng.random() < 0.10,
                opt_down=rng.random() < 0.06,
                suppressed=rng.random() < 0.02,
                plan="pro" if rng.random() < 0.25 else "free",
            )
        )
    reachable = [u for u in users if u.permission and not u.opted_out and not u.suppressed]
    dead = rng.sample([u for u in reachable if u.ios], max(1, count // 200))
    seconds = int((END - START).total_seconds()) - 3 * 3600
    carts: list[tuple[datetime, User, str, str]] = []
    purchases: list[tuple[datetime, User, str]] = []
    for n, user in enumerate(rng.sample(reachable, max(4, count // 10))):
        at = START + timedelta(seconds=rng.randrange(seconds))
        cart = f"cart-{n}"
        carts.append((at, user, cart, rng.choice(ITEMS)))
        if rng.random() < 0.35:
            purchases.append((at + timedelta(minutes=rng.randrange(5, 50)), user, cart))
    orders = [
        (START + timedelta(seconds=rng.randrange(seconds)), rng.choice(users))
        for _ in range(max(4, count // 15))
    ]
    # Each dead token's owner has two order updates: the first meets the 410, the second
    # must not be tried on that token again.
    for user in dead:
        orders += [(START + timedelta(minutes=30), user), (START + timedelta(hours=5), user)]
    americas = [u for u in reachable if u.zone.startswith("America/") and u not in dead]
    leavers = rng.sample(americas, min(len(americas), max(2, count // 100)))
    return World(users, dead, carts, purchases, orders, leavers, {u.user_id: u for u in users})


async def seed(stubs: Stubs, world: World, progress: Progress, now: datetime) -> None:
    users = world.users
    task = progress.add_task("Seeding the app", total=len(users) * 3)
    await stubs.consent.DefineCategory(
        consent_messages.DefineCategoryRequest(
            app_id=APP,
            category=consent_resources.Category(
                category_id=PROMOS,
                kind=types_pb2.CATEGORY_KIND_MARKETING,
                default_state=consent_resources.DEFAULT_STATE_OPTED_IN,
            ),
        )
    )
    await stubs.consent.DefineCategory(
        consent_messages.DefineCategoryRequest(
            app_id=APP,
            category=consent_resources.Category(
                category_id=ORDERS,
                kind=types_pb2.CATEGORY_KIND_TRANSACTIONAL,
                default_state=consent_resources.DEFAULT_STATE_OPTED_IN,
            ),
        )
    )

    def device_call(user: User) -> Callable[[], Awaitable[Any]]:
        return lambda: stubs.consent.RegisterDevice(
            consent_messages.RegisterDeviceRequest(
                app_id=APP,
                device=consent_resources.Device(
                    user_id=user.user_id,
                    platform=types_pb2.PLATFORM_IOS if user.ios else types_pb2.PLATFORM_ANDROID,
                    provider=types_pb2.PROVIDER_APNS if user.ios else types_pb2.PROVIDER_FCM,
                    token=user.token,
                    time_zone=user.zone,
                    permission=types_pb2.PERMISSION_STATE_GRANTED
                    if user.permission
                    else types_pb2.PERMISSION_STATE_DENIED,
                ),
            ),
            timeout=120,
        )

    def choice_calls(user: User) -> list[Callable[[], Awaitable[Any]]]:
        """The user's opt-out and preferences (none for most users)."""
        calls: list[Callable[[], Awaitable[Any]]] = []
        if user.opted_out:
            opt_out = consent_messages.RecordConsentRequest(
                app_id=APP,
                user_id=user.user_id,
                scope=consent_resources.ConsentScope(
                    kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
                ),
                action=consent_resources.CONSENT_ACTION_OPT_OUT,
                source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
                idempotency_key=f"seed-out-{user.user_id}",
            )
            calls.append(lambda: stubs.consent.RecordConsent(opt_out, timeout=120))
        if user.quiet_hours or user.opt_down:
            preferences = consent_resources.Preferences()
            paths = []
            if user.quiet_hours:  # a late sleeper: nothing before 10:30
                paths.append("quiet_hours")
                preferences.quiet_hours.CopyFrom(
                    policy_pb2.QuietHours(
                        windows=[
                            policy_pb2.QuietHoursWindow(
                                start=types_pb2.LocalTime(hours=22),
                                end=types_pb2.LocalTime(hours=10, minutes=30),
                            )
                        ]
                    )
                )
            if user.opt_down:
                paths.append("frequency")
                preferences.frequency.CopyFrom(
                    policy_pb2.FrequencyPreference(
                        mode=policy_pb2.FREQUENCY_MODE_DAILY_MAX, max_count=1
                    )
                )
            chosen = consent_messages.SetPreferencesRequest(
                app_id=APP,
                user_id=user.user_id,
                preferences=preferences,
                update_mask=FieldMask(paths=paths),
            )
            calls.append(lambda: stubs.consent.SetPreferences(chosen, timeout=120))
        return calls

    def consent_calls() -> Iterator[Callable[[], Awaitable[None]]]:
        """One call per user: the device, then the user's choices (their own rows, so
        independent of the other users' calls in flight)."""
        for user in users:
            register, choices = device_call(user), choice_calls(user)

            async def both(
                register: Callable[[], Awaitable[Any]] = register,
                choices: list[Callable[[], Awaitable[Any]]] = choices,
            ) -> None:
                await register()
                progress.advance(task)
                for call in choices:
                    await call()
                progress.advance(task)

            yield both

    def profile_batches() -> tuple[list[list[Any]], list[list[Any]]]:
        """Profiles and history events, drawn in the same order as ever (500 users at a
        time) so a seed gives the same population, sent 1,000 to a call."""
        rng = random.Random(len(users))
        updates: list[Any] = []
        events: list[Any] = []
        for start in range(0, len(users), 500):
            batch = users[start : start + 500]
            updates += [
                seg_resources.ProfileUpdate(
                    user_id=user.user_id,
                    set_attributes={
                        "plan": values_pb2.AttributeValue(string_value=user.plan),
                        "lifecycle": values_pb2.AttributeValue(
                            string_value="active" if rng.random() < 0.85 else "dormant"
                        ),
                        "country_zone": values_pb2.AttributeValue(string_value=user.zone),
                        "lifetime_orders": values_pb2.AttributeValue(
                            number_value=float(rng.randrange(0, 30))
                        ),
                    },
                )
                for user in batch
            ]
            events += [
                seg_resources.Event(
                    event_id=f"hist-{user.user_id}-{k}",
                    user_id=user.user_id,
                    name=name,
                    occurred_at=stamp(now - timedelta(days=rng.randrange(1, 30), minutes=k)),
                    properties={"item": values_pb2.AttributeValue(string_value=rng.choice(ITEMS))},
                )
                for user in batch
                for k, name in enumerate(rng.choices(("app_open", "view_item", "purchase"), k=2))
            ]
        size = SEED_BATCH
        return (
            [updates[i : i + size] for i in range(0, len(updates), size)],
            [events[i : i + size] for i in range(0, len(events), size)],
        )

    async def segmentation_side() -> None:
        with TIMINGS.phase("seed: segmentation (profiles, events)"):
            updates, events = profile_batches()

            async def upsert(batch: list[Any]) -> None:
                await stubs.segmentation.UpsertProfiles(
                    seg_messages.UpsertProfilesRequest(app_id=APP, profiles=batch), timeout=120
                )
                progress.advance(task, len(batch))

            async def track(batch: list[Any]) -> None:
                await stubs.segmentation.TrackEvents(
                    seg_messages.TrackEventsRequest(app_id=APP, events=batch), timeout=120
                )

            # A few batches in flight: segmentation's writes queue on its one database.
            await gather_limited(
                [
                    *(functools.partial(upsert, batch) for batch in updates),
                    *(functools.partial(track, batch) for batch in events),
                ],
                limit=SEGMENTATION_IN_FLIGHT,
            )

    async def consent_side() -> None:
        with TIMINGS.phase("seed: consent (devices, choices)"):
            await gather_limited(consent_calls(), limit=CONSENT_IN_FLIGHT)

    async def the_rest() -> None:
        with TIMINGS.phase("seed: segments, list, policy"):
            await rest(stubs, users)

    # Consent, segmentation and the scheduler are three processes: seed them side by side.
    await asyncio.gather(consent_side(), segmentation_side(), the_rest())


async def rest(stubs: Stubs, users: Sequence[User]) -> None:
    """The segments, the suppression list and the app policy."""

    def segment(segment_id: str, name: str, attribute: str, value: str) -> Any:
        return stubs.segmentation.CreateSegment(
            seg_messages.CreateSegmentRequest(
                app_id=APP,
                segment=seg_resources.Segment(
                    segment_id=segment_id,
                    name=name,
                    rule=seg_resources.Rule(
                        attribute=seg_resources.AttributePredicate(
                            filter=values_pb2.PropertyFilter(
                                name=attribute,
                                operator=values_pb2.OPERATOR_EQ,
                                value=values_pb2.AttributeValue(string_value=value),
                            )
                        )
                    ),
                ),
            )
        )

    async def suppression_list() -> None:
        await stubs.segmentation.CreateList(
            seg_messages.CreateListRequest(
                app_id=APP,
                list=seg_resources.StaticList(
                    list_id="do-not-market",
                    name="Do not market (support escalations)",
                    kind=seg_resources.LIST_KIND_SUPPRESSION,
                ),
            )
        )
        suppressed = [u.user_id for u in users if u.suppressed]
        for start in range(0, len(suppressed), SEED_BATCH):
            await stubs.segmentation.AddToList(
                seg_messages.AddToListRequest(
                    app_id=APP,
                    list_id="do-not-market",
                    user_ids=suppressed[start : start + SEED_BATCH],
                )
            )

    await asyncio.gather(
        segment("active", "Active shoppers", "lifecycle", "active"),
        segment("pro", "Pro plan", "plan", "pro"),
        suppression_list(),
        policy(stubs),
    )


async def policy(stubs: Stubs) -> None:
    """The app's policy: the cap, default quiet hours and the jitter."""
    await stubs.scheduler.SetPolicy(
        messages_pb2.SetPolicyRequest(
            app_id=APP,
            policy=resources_pb2.Policy(
                cap_rules=[
                    policy_pb2.CapRule(
                        rule_id="daily",
                        scope=policy_pb2.CAP_SCOPE_ALL_MARKETING,
                        max_count=CAP_PER_24H,
                        rolling=Duration(seconds=24 * 3600),
                        on_exceed=policy_pb2.ON_EXCEED_DROP,
                    )
                ],
                default_quiet_hours=policy_pb2.QuietHours(
                    windows=[
                        policy_pb2.QuietHoursWindow(
                            start=types_pb2.LocalTime(hours=21), end=types_pb2.LocalTime(hours=8)
                        )
                    ]
                ),
                jitter_window=Duration(seconds=int(JITTER.total_seconds())),
            ),
        )
    )


def variant(variant_id: str, weight: int, title: str, body: str) -> resources_pb2.Variant:
    return resources_pb2.Variant(
        variant_id=variant_id,
        weight=weight,
        template=resources_pb2.Template(content=content_pb2.Content(title=title, body=body)),
    )


async def create_campaign(stubs: Stubs, key: str, campaign: resources_pb2.Campaign) -> str:
    created = await stubs.scheduler.CreateCampaign(
        messages_pb2.CreateCampaignRequest(app_id=APP, campaign=campaign, idempotency_key=key)
    )
    campaign_id = created.campaign.campaign_id
    await stubs.scheduler.StartCampaign(
        messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
    )
    return campaign_id


def cart_event(event_id: str, user: User, name: str, at: datetime, **props: str) -> Any:
    return seg_resources.Event(
        event_id=event_id,
        user_id=user.user_id,
        name=name,
        occurred_at=stamp(at),
        properties={k: values_pb2.AttributeValue(string_value=v) for k, v in props.items()},
    )


async def create_trigger(stubs: Stubs, platform: Platform) -> str:
    created = await stubs.scheduler.CreateTrigger(
        messages_pb2.CreateTriggerRequest(
            app_id=APP,
            idempotency_key="cart-abandonment",
            trigger=resources_pb2.Trigger(
                name="Cart abandonment",
                event=resources_pb2.EventMatcher(event_name="add_to_cart"),
                delay=Duration(seconds=3600),
                cancel_events=[
                    resources_pb2.EventMatcher(event_name="purchase", correlate_on=["cart_id"])
                ],
                category_id=PROMOS,
                template=resources_pb2.Template(
                    content=content_pb2.Content(
                        title="Still in your cart", body="{{item}} is waiting for you"
                    ),
                    placeholders=[
                        resources_pb2.Placeholder(
                            name="item",
                            source=resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY,
                            key="item",
                        )
                    ],
                ),
            ),
        )
    )
    # The scheduler follows segmentation's event stream from its head: probe with a user
    # of no device (and cancel the probe's cart) until a firing shows up.
    probe = User("demo-probe", "Europe/Berlin", True, "")
    for n in range(200):
        at = platform.now()
        await stubs.segmentation.TrackEvents(
            seg_messages.TrackEventsRequest(
                app_id=APP,
                events=[cart_event(f"probe-{n}", probe, "add_to_cart", at, cart_id=f"p{n}")],
            )
        )
        await asyncio.sleep(0.3)
        found = await stubs.scheduler.ExportUserData(
            messages_pb2.ExportUserDataRequest(app_id=APP, user_id=probe.user_id)
        )
        if found.contacts:
            await stubs.segmentation.TrackEvents(
                seg_messages.TrackEventsRequest(
                    app_id=APP,
                    events=[
                        cart_event(f"probe-buy-{k}", probe, "purchase", at, cart_id=f"p{k}")
                        for k in range(n + 1)
                    ],
                )
            )
            return created.trigger.trigger_id
    raise RuntimeError("the scheduler never followed segmentation's event stream")


# ---- the day ----------------------------------------------------------------------------


@dataclass
class Hourly:
    """Sends per simulated hour (UTC) by what happened, from the services' counters."""

    rows: dict[datetime, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, at: datetime, what: str, count: int) -> None:
        if count:
            self.rows[at.replace(minute=0, second=0, microsecond=0)][what] += count


async def campaign_counts(stubs: Stubs, campaign_id: str) -> Counter[str]:
    campaign = (
        await stubs.scheduler.GetCampaign(
            messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
    ).campaign
    progress = campaign.progress
    found: Counter[str] = Counter(
        sent=progress.sent, dropped=progress.dropped, held_out=progress.holdout
    )
    found["deferred"] = sum(
        c.count for c in progress.by_outcome if c.outcome == decision_pb2.OUTCOME_DEFER
    )
    return found


async def subject_stats(
    stubs: Stubs, *, campaign_id: str = "", trigger_id: str = ""
) -> delivery_messages.GetCampaignStatsResponse:
    request = (
        delivery_messages.GetCampaignStatsRequest(app_id=APP, campaign_id=campaign_id)
        if campaign_id
        else delivery_messages.GetCampaignStatsRequest(app_id=APP, trigger_id=trigger_id)
    )
    answer: delivery_messages.GetCampaignStatsResponse = await stubs.delivery.GetCampaignStats(
        request
    )
    return answer


@dataclass
class Run:
    sale_id: str = ""
    flash_id: str = ""
    trigger_id: str = ""
    order_sends: dict[str, str] = field(default_factory=dict)  # send id -> user id
    hourly: Hourly = field(default_factory=Hourly)
    pending_at_opt_out: set[str] = field(default_factory=set)
    seen: Counter[str] = field(default_factory=Counter)


async def counters(stubs: Stubs, run: Run) -> Counter[str]:
    """The campaigns' and the trigger's counters (their calls in flight at once)."""

    async def reminders() -> Counter[str]:
        try:
            stats = await subject_stats(stubs, trigger_id=run.trigger_id)
        except grpc.aio.AioRpcError as error:  # NOT_FOUND until its first send
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return Counter()
        return Counter({"cart reminder sent": stats.total.sent})

    async def campaign(campaign_id: str) -> Counter[str]:
        found = await campaign_counts(stubs, campaign_id)
        return Counter({f"campaign {key}": value for key, value in found.items()})

    parts = [campaign(c) for c in (run.sale_id, run.flash_id) if c]
    if run.trigger_id:
        parts.append(reminders())
    total: Counter[str] = Counter()
    for part in await asyncio.gather(*parts):
        total.update(part)
    return total


async def settle(stubs: Stubs, run: Run, at: datetime) -> None:
    """Wait until the counters stop moving after a clock step, and book the change."""
    previous = await counters(stubs, run)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        current = await counters(stubs, run)
        if current == previous:
            break
        previous = current
    for key, value in previous.items():
        if key != "campaign sent":  # booked at the exact instant, from the records
            run.hourly.add(at, key, value - run.seen[key])
        run.seen[key] = value


async def drain(stubs: Stubs, run: Run, within_s: float = 60.0) -> None:
    """Wait until delivery has an outcome for every send of the campaigns and the trigger."""
    deadline = time.monotonic() + within_s
    last, still = -1, 0
    while time.monotonic() < deadline:
        behind = done = 0
        answers = await asyncio.gather(
            *(subject_stats(stubs, campaign_id=c) for c in (run.sale_id, run.flash_id))
        )
        for answer in answers:
            total = answer.total
            finished = total.delivered + total.failed + total.suppressed + total.expired
            behind += max(0, total.sent - finished)
            done += finished
        # Done, or nothing moved for 3 s (a send waiting out a retry stays behind).
        still = still + 1 if done == last else 0
        if not behind or still >= 6:
            return
        last = done
        await asyncio.sleep(0.5)


async def book_campaign_sends(stubs: Stubs, run: Run) -> list[resources_pb2.ContactRecord]:
    """Every campaign send at the simulated instant the scheduler handed it to delivery."""
    records: list[resources_pb2.ContactRecord] = []
    for campaign_id in (run.sale_id, run.flash_id):
        for record in await decisions(stubs, campaign_id):
            if record.HasField("sent_at"):
                run.hourly.add(record.sent_at.ToDatetime(tzinfo=UTC), "campaign sent", 1)
            records.append(record)
    return records


async def run_day(
    stubs: Stubs, platform: Platform, world: World, progress: Progress, run: Run, step: timedelta
) -> None:
    sale = resources_pb2.Campaign(
        name="Summer sale",
        category_id=PROMOS,
        audience=resources_pb2.Audience(include_segment_ids=["active"]),
        variants=[
            variant("A", 50, "Summer sale: 20% off", "Everything in the app, today only"),
            variant("B", 50, "Your summer picks are 20% off", "Picked for you, today only"),
        ],
        holdout_basis_points=HOLDOUT_BP,
        schedule=resources_pb2.Schedule(
            local_time=resources_pb2.LocalTimeSchedule(
                date=types_pb2.LocalDate(year=SALE_DAY[0], month=SALE_DAY[1], day=SALE_DAY[2]),
                time=types_pb2.LocalTime(hours=SALE_HOUR),
                if_passed=resources_pb2.PASSED_TIME_POLICY_SKIP,
            )
        ),
    )
    with TIMINGS.phase("day: sale campaign, trigger (probe until followed)"):
        run.sale_id = await create_campaign(stubs, "summer-sale", sale)
        run.trigger_id = await create_trigger(stubs, platform)
    for user in world.dead:
        platform.fake(
            "fake-apns",
            "POST",
            "faults",
            {
                "effect": "status",
                "status": 410,
                "token": user.token,
                "timestamp_ms": int(platform.now().timestamp() * 1000),
            },
        )
    steps = int((END - START) / step)
    task = progress.add_task("Simulating the day", total=steps)
    now = START
    platform.move_clock(now)
    with TIMINGS.phase("day: settle after each clock step"):
        await settle(stubs, run, now)
    for _ in range(steps):
        nxt = now + step
        window = [c for c in world.carts if now <= c[0] < nxt]
        buys = [p for p in world.purchases if now <= p[0] < nxt]
        orders = [o for o in world.orders if now <= o[0] < nxt]
        with TIMINGS.phase("day: events and orders at their instants"):
            for at in sorted(
                {c[0] for c in window} | {p[0] for p in buys} | {o[0] for o in orders}
            ):
                platform.move_clock(at)
                events = [
                    cart_event(f"cart-{cart}", user, "add_to_cart", at, cart_id=cart, item=item)
                    for when, user, cart, item in window
                    if when == at
                ] + [
                    cart_event(f"buy-{cart}", user, "purchase", at, cart_id=cart)
                    for when, user, cart in buys
                    if when == at
                ]
                if events:
                    await stubs.segmentation.TrackEvents(
                        seg_messages.TrackEventsRequest(app_id=APP, events=events)
                    )
                for when, user in orders:
                    if when == at:
                        answer = await stubs.scheduler.SendTransactional(
                            messages_pb2.SendTransactionalRequest(
                                app_id=APP,
                                user_id=user.user_id,
                                category_id=ORDERS,
                                idempotency_key=f"order-{user.user_id}-{at.timestamp():.0f}",
                                content=content_pb2.Content(
                                    title="Your order shipped", body="It arrives on Thursday"
                                ),
                            )
                        )
                        run.order_sends[answer.send_id] = user.user_id
                        run.hourly.add(at, "order update accepted", 1)
        if now <= OPT_OUT_AT < nxt:
            with TIMINGS.phase("day: opt-outs, flash sale"):
                await opt_out_mid_campaign(stubs, platform, world, run)
        if now <= FLASH_AT < nxt:
            platform.move_clock(FLASH_AT)
            with TIMINGS.phase("day: opt-outs, flash sale"):
                run.flash_id = await create_campaign(
                    stubs,
                    "flash-sale",
                    resources_pb2.Campaign(
                        name="Flash sale (Pro plan)",
                        category_id=PROMOS,
                        audience=resources_pb2.Audience(include_segment_ids=["pro"]),
                        variants=[
                            variant("A", 100, "Flash sale: 2 hours only", "Pro members first")
                        ],
                        schedule=resources_pb2.Schedule(
                            immediate=resources_pb2.ImmediateSchedule()
                        ),
                    ),
                )
        platform.move_clock(nxt)
        with TIMINGS.phase("day: settle after each clock step"):
            await settle(stubs, run, now)
        now = nxt
        progress.advance(task)


async def opt_out_mid_campaign(stubs: Stubs, platform: Platform, world: World, run: Run) -> None:
    platform.move_clock(OPT_OUT_AT)
    records = await decisions(stubs, run.sale_id)
    leaving = {u.user_id for u in world.leavers}
    run.pending_at_opt_out = {
        r.user_id for r in records if r.user_id in leaving and not r.HasField("sent_at")
    }
    for user in world.leavers:
        await stubs.consent.RecordConsent(
            consent_messages.RecordConsentRequest(
                app_id=APP,
                user_id=user.user_id,
                scope=consent_resources.ConsentScope(
                    kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
                ),
                action=consent_resources.CONSENT_ACTION_OPT_OUT,
                source=consent_resources.CONSENT_SOURCE_UNSUBSCRIBE_LINK,
                idempotency_key=f"leave-{user.user_id}",
            )
        )
        user.opted_out = True


async def decisions(stubs: Stubs, campaign_id: str) -> list[resources_pb2.ContactRecord]:
    records: list[resources_pb2.ContactRecord] = []
    token = ""
    while True:
        page = await stubs.scheduler.ListCampaignDecisions(
            messages_pb2.ListCampaignDecisionsRequest(
                app_id=APP, campaign_id=campaign_id, page_size=1000, page_token=token
            )
        )
        records.extend(page.records)
        token = page.next_page_token
        if not token:
            return records


async def report_engagement(
    stubs: Stubs, platform: Platform, records: Sequence[resources_pb2.ContactRecord], seed: int
) -> tuple[int, int]:
    """The app reports opens and purchases: variant B opens and converts a little more; the
    holdout buys too (at its own base rate). Returns (opens, conversions) reported."""
    rng = random.Random(seed)
    now = platform.now()
    events: list[delivery_resources.EngagementEvent] = []
    opens = conversions = 0
    for record in records:
        if record.holdout:
            convert = rng.random() < 0.04
        elif record.HasField("sent_at"):
            boost = 1.25 if record.variant_id == "B" else 1.0
            if rng.random() < 0.22 * boost:
                opens += 1
                events.append(
                    delivery_resources.EngagementEvent(
                        event_id=f"open-{record.send_id}",
                        kind=delivery_resources.ENGAGEMENT_KIND_OPENED,
                        user_id=record.user_id,
                        send_id=record.send_id,
                        occurred_at=stamp(now),
                    )
                )
            convert = rng.random() < 0.06 * boost
        else:
            continue
        if convert:
            conversions += 1
            events.append(
                delivery_resources.EngagementEvent(
                    event_id=f"buy-{record.user_id}",
                    kind=delivery_resources.ENGAGEMENT_KIND_CONVERTED,
                    user_id=record.user_id,
                    occurred_at=stamp(now),
                    value=round(rng.uniform(15, 120), 2),
                    currency="EUR",
                )
            )
    for start in range(0, len(events), 500):
        await stubs.delivery.ReportEngagement(
            delivery_messages.ReportEngagementRequest(
                app_id=APP, events=events[start : start + 500]
            )
        )
    return opens, conversions


# ---- the report -------------------------------------------------------------------------


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


async def report(
    console: Console, stubs: Stubs, platform: Platform, world: World, run: Run, seed: int
) -> dict[str, Any]:
    sale_records = await decisions(stubs, run.sale_id)
    opens, conversions = await report_engagement(stubs, platform, sale_records, seed)
    users = world.users
    summary = Table(title="The app: shop", show_header=False)
    summary.add_row("Users", f"{len(users):,} in {len({u.zone for u in users})} time zones")
    ios = sum(u.ios for u in users)
    summary.add_row("Devices", f"{ios:,} iPhones (APNs), {len(users) - ios:,} Android (FCM)")
    rows = (
        ("Without push permission", sum(not u.permission for u in users)),
        (
            "Opted out of marketing before the day",
            sum(u.opted_out for u in users) - len(world.leavers),
        ),
        ("Quiet hours of their own (22:00-10:30)", sum(u.quiet_hours for u in users)),
        ("Opted down to 1 marketing push a day", sum(u.opt_down for u in users)),
        ("On the suppression list", sum(u.suppressed for u in users)),
    )
    for label, count in rows:
        summary.add_row(label, f"{count:,}")
    summary.add_row("Policy", f"{CAP_PER_24H} marketing pushes / 24 h, quiet 21:00-08:00 local")
    console.print(summary)

    result: dict[str, Any] = {}
    for campaign_id, label in ((run.sale_id, "Summer sale"), (run.flash_id, "Flash sale")):
        campaign = (
            await stubs.scheduler.GetCampaign(
                messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
            )
        ).campaign
        records = (
            sale_records if campaign_id == run.sale_id else await decisions(stubs, campaign_id)
        )
        progress = campaign.progress
        state = resources_pb2.CampaignState.Name(campaign.state).removeprefix("CAMPAIGN_STATE_")
        table = Table(
            title=f"{campaign.name}: who got what, who was held back and why "
            f"(audience {progress.audience_size:,}, {state.lower()})"
        )
        table.add_column("Outcome")
        table.add_column("Why")
        table.add_column("Users", justify="right")
        table.add_column("Share", justify="right")
        by_reason: Counter[tuple[str, str]] = Counter()
        for record in records:
            if record.holdout:
                by_reason[("held back", reason_text(0, decision_pb2.REASON_CODE_HOLDOUT))] += 1
            elif record.HasField("sent_at"):
                by_reason[(f"sent variant {record.variant_id}", "")] += 1
            elif record.decision.outcome == decision_pb2.OUTCOME_DROP:
                why = reason_text(record.decision.outcome, record.decision.reason)
                by_reason[("held back", why)] += 1
            else:
                why = reason_text(record.decision.outcome, record.decision.reason)
                by_reason[("still waiting", why)] += 1
        for (outcome, why), count in sorted(by_reason.items(), key=lambda kv: (kv[0][0], -kv[1])):
            table.add_row(outcome, why, f"{count:,}", pct(count, len(records)))
        console.print(table)
        result[label] = {
            "records": len(records),
            "by_reason": {f"{o}: {w}" if w else o: n for (o, w), n in by_reason.items()},
            "state": state,
        }

    # The sale at 10:00 local: when each zone's users were sent, on their own clocks.
    local: dict[str, list[datetime]] = defaultdict(list)
    for record in sale_records:
        user = world.by_id.get(record.user_id)
        if user is not None and record.HasField("sent_at"):
            local[user.zone].append(
                record.sent_at.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo(user.zone))
            )
    zones = Table(title="Summer sale: sent at 10:00 on each user's clock")
    for column in ("Zone", "Sent", "First (local)", "Last (local)", "Last (UTC)"):
        zones.add_column(column, justify="left" if column == "Zone" else "right")
    early = 0
    for zone in sorted(local, key=lambda z: min(local[z])):
        times = sorted(local[zone])
        zones.add_row(
            zone,
            f"{len(times):,}",
            times[0].strftime("%a %H:%M"),
            times[-1].strftime("%a %H:%M"),
            times[-1].astimezone(UTC).strftime("%H:%M"),
        )
        early += sum(t.hour < SALE_HOUR for t in times)
    console.print(zones)
    result["sale_before_10_local"] = early

    stats = await subject_stats(stubs, campaign_id=run.sale_id)
    table = Table(title="Summer sale: campaign statistics (delivery)")
    for column in (
        "Group",
        "Targeted",
        "Delivered",
        "Failed",
        "Opened",
        "Open rate",
        "Converted",
        "Conv. rate",
        "Revenue",
    ):
        table.add_column(column, justify="left" if column == "Group" else "right")
    for group in [*stats.variants, stats.total]:
        table.add_row(
            f"variant {group.variant_id}" if group.variant_id else "all treated",
            f"{group.targeted:,}",
            f"{group.delivered:,}",
            f"{group.failed:,}",
            f"{group.opened:,}",
            f"{100 * group.open_rate:.1f}%",
            f"{group.converted_users:,}",
            f"{100 * group.conversion_rate:.1f}%",
            f"EUR {group.conversion_value:,.0f}",
        )
    table.add_row(
        "holdout",
        f"{stats.holdout.users:,}",
        "-",
        "-",
        "-",
        "-",
        f"{stats.holdout.converted_users:,}",
        f"{100 * stats.holdout.conversion_rate:.1f}%",
        "-",
    )
    console.print(table)
    lift = stats.total.lift
    ci = lift.absolute_lift_ci
    relative = f"{100 * lift.relative_lift:+.0f}%" if lift.holdout_rate else "relative lift n/a"
    console.print(
        f"Holdout lift: {100 * lift.treatment_rate:.2f}% of treated users converted against "
        f"{100 * lift.holdout_rate:.2f}% of the holdout: {100 * lift.absolute_lift:+.2f} points "
        f"({relative}), 95% CI [{100 * ci.lower:+.2f}, {100 * ci.upper:+.2f}]"
        f" points, {'significant' if lift.significant else 'not significant'}."
    )
    result["lift"] = {"absolute": lift.absolute_lift, "significant": lift.significant}
    result["engagement"] = {"opens": opens, "conversions": conversions}

    # The cart trigger: what the buyers' firings became, from the scheduler's own records.
    trigger = await subject_stats(stubs, trigger_id=run.trigger_id)
    buyers = {user.user_id for _, user, _ in world.purchases}
    exports = await gather_limited(
        lambda user_id=user_id: stubs.scheduler.ExportUserData(  # type: ignore[misc]
            messages_pb2.ExportUserDataRequest(app_id=APP, user_id=user_id)
        )
        for user_id in buyers
    )
    cancelled = 0
    for exported in exports:
        cancelled += sum(
            1
            for c in exported.contacts
            if c.trigger_id == run.trigger_id
            and c.decision.reason == decision_pb2.REASON_CODE_TRIGGER_CANCELLED
        )

    async def order_status(send_id: str) -> int | None:
        """The order update's delivery status; None when the scheduler dropped it."""
        try:
            answer = await stubs.delivery.GetDelivery(
                delivery_messages.GetDeliveryRequest(app_id=APP, send_id=send_id)
            )
        except grpc.aio.AioRpcError as error:  # no device with permission
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        return int(answer.delivery.status)

    statuses = await gather_limited(
        lambda send_id=send_id: order_status(send_id)  # type: ignore[misc]
        for send_id in run.order_sends
    )
    not_handed = sum(status is None for status in statuses)
    delivered_orders = sum(
        status == delivery_resources.DELIVERY_STATUS_DELIVERED for status in statuses
    )
    failed_orders = sum(status == delivery_resources.DELIVERY_STATUS_FAILED for status in statuses)
    dead_tries = [
        len(
            platform.fake(
                "fake-apns", "GET", "requests?" + urllib.parse.urlencode({"token": u.token})
            )
        )
        for u in world.dead
    ]
    leavers_sent_after = 0
    for record in sale_records:
        if record.user_id in run.pending_at_opt_out and record.HasField("sent_at"):
            leavers_sent_after += 1
    journeys = Table(title="The rest of the day", show_header=False)
    journeys.add_row(
        "Cart abandonment (1 h delay)",
        f"{len(world.carts):,} carts, {len(world.purchases):,} bought within the hour: "
        f"{cancelled:,} reminders cancelled, {trigger.total.sent:,} sent, "
        f"{trigger.total.delivered:,} delivered",
    )
    journeys.add_row(
        "Order updates (transactional)",
        f"{len(run.order_sends):,} sent during the campaigns, {delivered_orders:,} delivered "
        f"(no cap, no quiet hours), {failed_orders:,} failed (dead token), {not_handed:,} not "
        "sent (no device with permission)",
    )
    journeys.add_row(
        "Opted out at 12:00 UTC",
        f"{len(world.leavers):,} users in the Americas, {len(run.pending_at_opt_out):,} still "
        f"waiting for the sale: {leavers_sent_after} of them got it afterwards",
    )
    journeys.add_row(
        "Dead tokens (APNs 410)",
        f"{len(world.dead):,} tokens reported dead: tried {sum(dead_tries):,} times in all "
        f"({sum(n > 1 for n in dead_tries)} of them more than once), "
        f"{stats.total.tokens_invalidated:,} invalidated by the sale",
    )
    console.print(journeys)
    result["trigger"] = {"sent": trigger.total.sent, "cancelled": cancelled}
    result["orders"] = {
        "sent": len(run.order_sends),
        "delivered": delivered_orders,
        "not_handed": not_handed,
        "failed": failed_orders,
    }
    result["opt_out"] = {"pending": len(run.pending_at_opt_out), "sent_after": leavers_sent_after}
    result["dead_tokens"] = {"count": len(world.dead), "max_tries": max(dead_tries, default=0)}
    return result


SERIES = (
    ("campaign sent", "sent: campaigns", "#2e7d32"),
    ("cart reminder sent", "sent: cart reminders", "#66bb6a"),
    ("order update accepted", "sent: order updates", "#1565c0"),
    ("campaign deferred", "deferred (quiet hours, jitter)", "#ffb300"),
    ("campaign dropped", "dropped (caps, consent, ...)", "#c62828"),
    ("campaign held_out", "held out", "#9e9e9e"),
)


def write_chart(hourly: Hourly, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [START + timedelta(hours=h) for h in range(int((END - START) / timedelta(hours=1)))]
    figure, axes = plt.subplots(figsize=(11, 4.8), dpi=110)
    bottom = [0] * len(hours)
    positions = list(range(len(hours)))
    for key, label, colour in SERIES:
        values = [hourly.rows.get(hour, Counter())[key] for hour in hours]
        axes.bar(positions, values, bottom=bottom, label=label, color=colour, width=0.85)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_xticks(positions[::2], [h.strftime("%H:00") for h in hours[::2]], rotation=45)
    axes.set_xlabel("simulated hour (UTC), 1-2 June 2026")
    axes.set_ylabel("sends and decisions")
    axes.set_title("make demo: one day of the shop app, per hour and outcome")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


# ---- main -------------------------------------------------------------------------------


async def drive(
    console: Console, platform: Platform, world: World, args: argparse.Namespace
) -> dict[str, Any]:
    channels = {
        name: grpc.aio.insecure_channel(platform.addr(name))
        for name in ("consent", "segmentation", "scheduler", "delivery")
    }
    try:
        stubs = Stubs(
            consent_pb2_grpc.ConsentServiceStub(channels["consent"]),
            segmentation_pb2_grpc.SegmentationServiceStub(channels["segmentation"]),
            scheduler_pb2_grpc.SchedulerServiceStub(channels["scheduler"]),
            delivery_pb2_grpc.DeliveryServiceStub(channels["delivery"]),
        )
        run = Run()
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            with TIMINGS.phase("seed (in all)"):
                await seed(stubs, world, progress, platform.now())
            with TIMINGS.phase("day (in all)"):
                await run_day(stubs, platform, world, progress, run, timedelta(minutes=args.step))
        with TIMINGS.phase("drain delivery"):
            await drain(stubs, run)
        with TIMINGS.phase("chart"):
            await book_campaign_sends(stubs, run)
            write_chart(run.hourly, args.chart)
        with TIMINGS.phase("report"):
            found = await report(console, stubs, platform, world, run, args.seed)
        console.print(f"Chart of sends per hour per outcome: {args.chart}")
        return found
    finally:
        for channel in channels.values():
            await channel.close()


def scratch_dir() -> str | None:
    """Where the demo's throwaway databases go: a memory file system (``/dev/shm``) when
    the machine has one, so the services' commits (``synchronous=FULL``) do not wait on
    the disk for data deleted a minute later; else the system's temporary directory."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000, help="population (default 5000)")
    parser.add_argument("--chart", type=Path, default=ROOT / "var" / "demo" / "demo-chart.png")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the population")
    parser.add_argument(
        "--step", type=int, default=20, help="simulated minutes per clock step (default 20)"
    )
    parser.add_argument("--json", type=Path, help="also write the report's figures here")
    parser.add_argument(
        "--scratch",
        default=scratch_dir(),
        help="directory for the run's temporary directory (default /dev/shm when there is "
        "one, else the system's temporary directory)",
    )
    parser.add_argument(
        "--timings", action="store_true", help="also print the wall time of each phase"
    )
    args = parser.parse_args(argv)
    if args.users < 50:
        parser.error("--users must be at least 50")
    if not 1 <= args.step <= 60:
        parser.error("--step must be 1..60 minutes")
    console = Console(width=110)
    started = time.monotonic()
    world = make_world(args.users, args.seed)
    with tempfile.TemporaryDirectory(prefix="pushwarden-demo-", dir=args.scratch) as directory:
        platform = Platform(Path(directory))
        console.print(f"Starting the platform (supervisor, sandbox APNs/FCM) under {directory}")
        try:
            with TIMINGS.phase("start the platform"):
                platform.start()
            found = asyncio.run(drive(console, platform, world, args))
        except BaseException:
            console.print(platform.tail())
            raise
        finally:
            with TIMINGS.phase("stop the platform"):
                code = platform.stop()
        console.print(
            f"Stopped the platform (supervisor exit {code}); the demo took "
            f"{time.monotonic() - started:.0f} s."
        )
        if args.timings:
            console.print(TIMINGS.table())
    if args.json is not None:
        args.json.write_text(json.dumps(found, indent=2, default=str))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

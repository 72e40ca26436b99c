"""SetPolicy and GetPolicy through real gRPC on SQLite and PostgreSQL, with a real consent
service (on its own database of the same backend) answering the category checks; and
the effective rules dispatch reads, cached per version across two handler instances
on one database (as two replicas)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pushwarden.common.v1 import content_pb2, policy_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.policy import CapAction, CapRule, CapScope, Rules
from pushwarden.runtime.app import ServiceApp, open_database
from pushwarden.runtime.clock import ManualClock
from pushwarden.runtime.db import is_sqlite
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.runtime.testing import throwaway_postgres_database
from pushwarden.runtime.unimplemented import service_handler
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2, scheduler_pb2_grpc
from pushwarden.services.consent.bootstrap import bootstrap as consent_bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.scheduler.bootstrap import MIGRATIONS
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.scheduler.domain.policy import PolicyChange, to_rules, with_defaults
from pushwarden.services.scheduler.handlers.policies import PolicyHandlers
from pushwarden.services.scheduler.rpc.policies import PolicyRpcs
from pushwarden.services.scheduler.storage.uow import unit_of_work_factory

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as ConsentStub
    from pushwarden.scheduler.v1.scheduler_pb2_grpc import (
        SchedulerServiceAsyncStub as SchedulerStub,
    )

pytestmark = pytest.mark.storage

APP = "shop"
OTHER_APP = "news"
PSEUDONYM_KEY = "k" * 64
SERVICE = scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"]
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class ConsentKinds:
    """The CategoryKinds the handler needs, answered by consent's BatchGetCategories."""

    def __init__(self, consent: ConsentStub) -> None:
        self._consent = consent
        self.calls = 0

    async def kinds(self, app_id: str, category_ids: Sequence[str]) -> dict[str, str]:
        self.calls += 1
        answer = await self._consent.BatchGetCategories(
            consent_messages.BatchGetCategoriesRequest(app_id=app_id, category_ids=category_ids)
        )
        return {
            category.category_id: types_pb2.CategoryKind.Name(category.kind).removeprefix(
                "CATEGORY_KIND_"
            )
            for category in answer.categories
        }


class PolicyServicer(PolicyRpcs):
    """The policy RPCs alone, on the scheduler's descriptor."""

    def __init__(self, handlers: PolicyHandlers) -> None:
        self._policies = handlers


@contextlib.contextmanager
def _consent_database(url: str, directory: Path) -> Iterator[str]:
    if is_sqlite(url):
        yield f"sqlite:///{directory / 'consent' / 'consent.db'}"
        return
    with throwaway_postgres_database("pw_consent_") as other:
        yield other


@pytest.fixture
async def consent(any_database_url: str, tmp_path: Path) -> AsyncIterator[ConsentStub]:
    """Consent serving on its own database of the test's backend, with a marketing
    ``promos`` and a transactional ``account`` category defined for the app."""
    with _consent_database(any_database_url, tmp_path) as url:
        app = consent_bootstrap(local_test_config(ConsentConfig, url, PSEUDONYM_KEY=PSEUDONYM_KEY))
        async with serving(app) as channel:
            stub: ConsentStub = consent_pb2_grpc.ConsentServiceStub(channel)
            for category_id, kind in (
                ("promos", types_pb2.CATEGORY_KIND_MARKETING),
                ("account", types_pb2.CATEGORY_KIND_TRANSACTIONAL),
            ):
                await stub.DefineCategory(
                    consent_messages.DefineCategoryRequest(
                        app_id=APP,
                        category=consent_resources.Category(
                            category_id=category_id,
                            kind=kind,
                            default_state=consent_resources.DEFAULT_STATE_OPTED_IN,
                        ),
                    )
                )
            yield stub


class World:
    """The scheduler's database, the consent stub and a clock the tests move."""

    def __init__(self, database_url: str, consent: ConsentStub) -> None:
        self.database_url = database_url
        self.kinds = ConsentKinds(consent)
        self.clock = ManualClock(START)

    def handlers(self, app: ServiceApp[SchedulerConfig], **extra: object) -> PolicyHandlers:
        return PolicyHandlers(
            unit_of_work_factory(app.database),
            self.clock,
            self.kinds,
            **extra,  # type: ignore[arg-type]
        )

    def app(self) -> ServiceApp[SchedulerConfig]:
        config = local_test_config(SchedulerConfig, self.database_url)
        return ServiceApp(config, open_database(config, MIGRATIONS), handlers=(), service_names=())

    @contextlib.asynccontextmanager
    async def scheduler(self) -> AsyncIterator[SchedulerStub]:
        """A scheduler serving the policy RPCs on the test's database."""
        base = self.app()
        servicer = PolicyServicer(self.handlers(base))
        # The same config and database, now with the policy RPCs to serve.
        app = ServiceApp(
            base.config,
            base.database,
            handlers=(service_handler(SERVICE, servicer),),
            service_names=(SERVICE.full_name,),
            clock=self.clock,
        )
        async with serving(app) as channel:
            stub: SchedulerStub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            yield stub


@pytest.fixture
def world(any_database_url: str, consent: ConsentStub) -> World:
    return World(any_database_url, consent)


def cap(rule_id: str, **fields: object) -> policy_pb2.CapRule:
    rule = policy_pb2.CapRule(
        rule_id=rule_id, scope=policy_pb2.CAP_SCOPE_ALL_MARKETING, max_count=3
    )
    rule.rolling.FromTimedelta(timedelta(hours=24))
    for name, value in fields.items():
        setattr(rule, name, value)
    return rule


def a_policy() -> resources_pb2.Policy:
    policy = resources_pb2.Policy(
        cap_rules=[
            cap("daily"),
            cap(
                "promos-weekly",
                scope=policy_pb2.CAP_SCOPE_CATEGORY,
                category_id="promos",
                calendar=policy_pb2.CALENDAR_PERIOD_WEEK,
                max_count=5,
                on_exceed=policy_pb2.ON_EXCEED_DROP,
            ),
        ],
        default_quiet_hours=policy_pb2.QuietHours(
            windows=[
                policy_pb2.QuietHoursWindow(
                    start=types_pb2.LocalTime(hours=22), end=types_pb2.LocalTime(hours=8)
                )
            ]
        ),
        time_zone_fallback=resources_pb2.TimeZoneFallback(
            mode=resources_pb2.TIME_ZONE_FALLBACK_MODE_DEFAULT_ZONE,
            default_time_zone="Europe/Paris",
        ),
    )
    policy.jitter_window.FromTimedelta(timedelta(minutes=10))
    return policy


def set_request(policy: resources_pb2.Policy, **fields: object) -> messages_pb2.SetPolicyRequest:
    request = messages_pb2.SetPolicyRequest(app_id=APP, policy=policy)
    for name, value in fields.items():
        if isinstance(value, list):
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=value))
        else:
            setattr(request, name, value)
    return request


async def get(scheduler: SchedulerStub, app_id: str = APP) -> resources_pb2.Policy:
    answer = await scheduler.GetPolicy(messages_pb2.GetPolicyRequest(app_id=app_id))
    return answer.policy


def without_output(policy: resources_pb2.Policy) -> resources_pb2.Policy:
    stripped = resources_pb2.Policy()
    stripped.CopyFrom(policy)
    stripped.ClearField("version")
    stripped.ClearField("updated_at")
    return stripped


async def test_a_never_set_policy_reads_as_the_defaults_at_version_0(world: World) -> None:
    async with world.scheduler() as scheduler:
        policy = await get(scheduler)
    assert policy == with_defaults(resources_pb2.Policy())
    assert policy.version == 0
    assert not policy.HasField("updated_at")
    assert policy.jitter_window.ToTimedelta() == timedelta(minutes=30)


async def test_set_stores_the_effective_policy_and_versions_only_changes(world: World) -> None:
    async with world.scheduler() as scheduler:
        first = (await scheduler.SetPolicy(set_request(a_policy()))).policy
        assert first.version == 1
        assert first.updated_at.ToDatetime(UTC) == START
        assert without_output(first) == with_defaults(a_policy())
        assert await get(scheduler) == first

        world.clock.set(START + timedelta(minutes=5))
        again = (await scheduler.SetPolicy(set_request(a_policy()))).policy
        assert again == first  # the same policy: nothing written, same version and time
        spelled_out = (await scheduler.SetPolicy(set_request(with_defaults(a_policy())))).policy
        assert spelled_out == first  # defaults written out are the same policy

        changed = a_policy()
        changed.opt_down_daily_max = 2
        second = (await scheduler.SetPolicy(set_request(changed))).policy
        assert second.version == 2
        assert second.updated_at.ToDatetime(UTC) == START + timedelta(minutes=5)
        assert second.opt_down_daily_max == 2
        assert await get(scheduler) == second
        assert (await get(scheduler, OTHER_APP)).version == 0  # apps are apart


async def test_a_mask_changes_only_the_fields_it_names(world: World) -> None:
    async with world.scheduler() as scheduler:
        await scheduler.SetPolicy(set_request(a_policy()))
        incoming = resources_pb2.Policy(opt_down_weekly_max=6)  # no cap rules, no zone
        answer = await scheduler.SetPolicy(
            set_request(incoming, update_mask=["opt_down_weekly_max", "default_quiet_hours"])
        )
        policy = answer.policy
        assert policy.version == 2
        assert policy.opt_down_weekly_max == 6
        assert not policy.HasField("default_quiet_hours")  # named, unset: back to none
        assert [rule.rule_id for rule in policy.cap_rules] == ["daily", "promos-weekly"]
        assert policy.time_zone_fallback.default_time_zone == "Europe/Paris"

        # An unset mask replaces everything: unset fields take their defaults.
        replaced = await scheduler.SetPolicy(set_request(resources_pb2.Policy()))
        assert without_output(replaced.policy) == with_defaults(resources_pb2.Policy())
        assert replaced.policy.version == 3


async def test_expected_version_guards_against_lost_updates(world: World) -> None:
    async with world.scheduler() as scheduler:
        await scheduler.SetPolicy(set_request(a_policy(), expected_version=0))
        changed = a_policy()
        changed.opt_down_daily_max = 4
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await scheduler.SetPolicy(set_request(changed, expected_version=7))
        error = rich_error(stale.value)
        assert error.code == grpc.StatusCode.ABORTED
        assert error.reason == "VERSION_MISMATCH"
        assert error.metadata["stored_version"] == "1"
        assert (await get(scheduler)).opt_down_daily_max == 1  # nothing written
        done = await scheduler.SetPolicy(set_request(changed, expected_version=1))
        assert done.policy.version == 2


async def test_two_concurrent_writers_expecting_one_version_cannot_both_win(
    world: World,
) -> None:
    async with world.scheduler() as scheduler:
        await scheduler.SetPolicy(set_request(a_policy()))
        writers = []
        for count in (4, 5):
            changed = a_policy()
            changed.opt_down_daily_max = count
            writers.append(scheduler.SetPolicy(set_request(changed, expected_version=1)))
        results = await asyncio.gather(*writers, return_exceptions=True)
        won = [r for r in results if isinstance(r, messages_pb2.SetPolicyResponse)]
        lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(won) == 1
        assert len(lost) == 1
        assert lost[0].code() == grpc.StatusCode.ABORTED
        stored = await get(scheduler)
        assert stored.version == 2
        assert stored.opt_down_daily_max == won[0].policy.opt_down_daily_max


async def test_bad_policies_are_refused_naming_every_field_and_write_nothing(
    world: World,
) -> None:
    bad = a_policy()
    bad.cap_rules.append(cap("opt-down"))
    bad.cap_rules[0].max_count = 0
    bad.default_quiet_hours.windows[0].end.CopyFrom(types_pb2.LocalTime(hours=22))
    bad.default_quiet_hours.windows[0].days.append(types_pb2.DAY_OF_WEEK_UNSPECIFIED)
    bad.time_zone_fallback.default_time_zone = "Atlantis/Capital"
    bad.jitter_window.FromTimedelta(timedelta(hours=7))
    async with world.scheduler() as scheduler:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await scheduler.SetPolicy(set_request(bad))
        error = rich_error(refused.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error.fields) == {
            "policy.cap_rules[0].max_count",
            "policy.cap_rules[2].rule_id",
            "policy.default_quiet_hours.windows[0].end",
            "policy.default_quiet_hours.windows[0].days[0]",
            "policy.time_zone_fallback.default_time_zone",
            "policy.jitter_window",
        }
        with pytest.raises(grpc.aio.AioRpcError) as masked:
            await scheduler.SetPolicy(set_request(a_policy(), update_mask=["jitter", "version"]))
        assert set(rich_error(masked.value).fields) == {
            "update_mask.paths[0]",
            "update_mask.paths[1]",
        }
        for call in (
            scheduler.SetPolicy(messages_pb2.SetPolicyRequest(policy=a_policy())),
            scheduler.GetPolicy(messages_pb2.GetPolicyRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as no_app:
                await call
            assert rich_error(no_app.value).fields.keys() == {"app_id"}
        assert (await get(scheduler)).version == 0
    assert world.kinds.calls == 0  # refused before asking consent


async def test_categories_are_checked_with_consent(world: World) -> None:
    confirmation = resources_pb2.OptOutConfirmation(
        enabled=True,
        template=resources_pb2.Template(content=content_pb2.Content(title="You opted out")),
    )
    async with world.scheduler() as scheduler:
        unknown = a_policy()
        unknown.cap_rules[1].category_id = "gadgets"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await scheduler.SetPolicy(set_request(unknown))
        error = rich_error(refused.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_REFERENCE")
        assert error.fields.keys() == {"policy.cap_rules[1].category_id"}

        marketing = a_policy()
        marketing.opt_out_confirmation.CopyFrom(confirmation)
        marketing.opt_out_confirmation.category_id = "promos"
        with pytest.raises(grpc.aio.AioRpcError) as mismatch:
            await scheduler.SetPolicy(set_request(marketing))
        error = rich_error(mismatch.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "CATEGORY_KIND_MISMATCH",
        )
        assert error.preconditions == ("CATEGORY_KIND_MISMATCH",)

        missing = a_policy()
        missing.opt_out_confirmation.CopyFrom(confirmation)
        missing.opt_out_confirmation.category_id = "welcome"
        with pytest.raises(grpc.aio.AioRpcError) as absent:
            await scheduler.SetPolicy(set_request(missing))
        error = rich_error(absent.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_REFERENCE")
        assert error.fields.keys() == {"policy.opt_out_confirmation.category_id"}
        assert (await get(scheduler)).version == 0  # none of them wrote anything

        good = a_policy()
        good.opt_out_confirmation.CopyFrom(confirmation)
        good.opt_out_confirmation.category_id = "account"
        stored = (await scheduler.SetPolicy(set_request(good))).policy
        assert stored.version == 1
        assert stored.opt_out_confirmation.category_id == "account"

        # A mask that leaves the categories alone does not ask consent again.
        calls = world.kinds.calls
        await scheduler.SetPolicy(
            set_request(
                resources_pb2.Policy(opt_down_daily_max=2), update_mask=["opt_down_daily_max"]
            )
        )
        assert world.kinds.calls == calls


async def test_a_set_policy_survives_a_restart(world: World) -> None:
    async with world.scheduler() as scheduler:
        stored = (await scheduler.SetPolicy(set_request(a_policy()))).policy
    async with world.scheduler() as restarted:
        assert await get(restarted) == stored


async def test_rules_follow_the_stored_version_with_a_bounded_staleness(world: World) -> None:
    ticks = [0.0]
    app = world.app()
    try:
        writer = world.handlers(app)
        reader = world.handlers(app, refresh_s=1.0, monotonic=lambda: ticks[0])

        rules, policy = await reader.rules(APP)
        assert (rules, policy.version) == (Rules(), 0)

        await writer.set(PolicyChange.from_proto(set_request(a_policy())))
        assert (await reader.rules(APP))[1].version == 0  # cached, within the second
        ticks[0] = 1.5
        rules, policy = await reader.rules(APP)
        assert policy.version == 1
        assert rules == to_rules(a_policy())
        assert rules.caps[1] == CapRule(
            CapScope.CATEGORY,
            5,
            rules.caps[1].window,
            CapAction.DROP,
            target_id="promos",
            name="promos-weekly",
        )
        assert rules.default_zone == "Europe/Paris"
        again, _ = await reader.rules(APP)
        assert again is rules  # the same version: not rebuilt

        # The writer's own cache is dropped by its SetPolicy at once.
        assert (await writer.rules(APP))[1].version == 1
        changed = a_policy()
        changed.opt_down_daily_max = 2
        await writer.set(PolicyChange.from_proto(set_request(changed)))
        assert (await writer.rules(APP))[0].opt_down_daily_max == 2

        ticks[0] = 3.0  # the reader re-reads the version and sees it moved
        assert (await reader.rules(APP))[0].opt_down_daily_max == 2
    finally:
        await app.aclose()


async def test_a_read_that_a_set_policy_overtook_is_not_cached(world: World) -> None:
    """A dispatch pass (or the consent feed follower) reading the policy while a
    SetPolicy commits gets the old version, but must not cache it: a call that starts
    after SetPolicy returned sees the new policy at once."""
    app = world.app()
    stored = unit_of_work_factory(app.database)
    read_done, go_on = asyncio.Event(), asyncio.Event()
    paused = [True]

    @contextlib.asynccontextmanager
    async def uow(*, read_only: bool = False) -> AsyncIterator[object]:
        async with stored(read_only=read_only) as work:
            yield work
        if read_only and paused[0]:
            paused[0] = False
            read_done.set()  # the read happened, its result is not cached yet
            await go_on.wait()

    try:
        handlers = PolicyHandlers(uow, world.clock, world.kinds)  # type: ignore[arg-type]
        racing = asyncio.create_task(handlers.rules(APP))
        await read_done.wait()
        await handlers.set(PolicyChange.from_proto(set_request(a_policy())))
        go_on.set()
        assert (await racing)[1].version == 0  # it began before the change
        rules, policy = await handlers.rules(APP)
        assert policy.version == 1
        assert rules == to_rules(a_policy())
    finally:
        await app.aclose()

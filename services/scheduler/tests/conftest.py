"""Scheduler's service tests start from databases already at the migrations' head (copied
from a template migrated once per session: see ``pushwarden.runtime.testing``).

The ``platform`` fixture is the world a scheduler test runs in: real consent,
segmentation and delivery services served in-process, each on its own database of the
test's backend,
the fake APNs and FCM with one app's credentials, and one clock file every service
reads, so a test moves time for all of them instead of sleeping.
``platform.scheduler()`` serves a scheduler app on the test's database (several may run
at once, as replicas do).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pushwarden.common.v1 import types_pb2, values_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.delivery.v1 import delivery_pb2_grpc
from pushwarden.runtime.db import is_sqlite
from pushwarden.runtime.servicetest import ServiceProcess, free_port, local_test_config, serving
from pushwarden.runtime.testing import throwaway_postgres_database
from pushwarden.sandbox.testing import Sandbox, provider_sandbox
from pushwarden.scheduler.v1 import scheduler_pb2_grpc
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.segmentation.v1 import segmentation_pb2_grpc
from pushwarden.services.consent.bootstrap import bootstrap as consent_bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.delivery.bootstrap import bootstrap as delivery_bootstrap
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.scheduler.bootstrap import MIGRATIONS, bootstrap
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.segmentation.bootstrap import bootstrap as segmentation_bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as ConsentStub
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )
    from pushwarden.scheduler.v1.scheduler_pb2_grpc import (
        SchedulerServiceAsyncStub as SchedulerStub,
    )
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub as SegmentationStub,
    )

PUSHWARDEN_TEST_MIGRATIONS = MIGRATIONS

APP = "shop"
TOPIC = "com.example.shop"
PROJECT = "shop-project"
PSEUDONYM_KEY = "k" * 64
_numbers = itertools.count(1)


@contextlib.contextmanager
def _sibling_database(url: str, directory: Path, name: str) -> Iterator[str]:
    """Another empty database on the same backend as ``url``."""
    if is_sqlite(url):
        yield f"sqlite:///{directory / name / f'{name}.db'}"
        return
    with throwaway_postgres_database(f"pw_{name}_") as other:
        yield other


class Platform:
    """Consent, segmentation and delivery serving, the fakes, one clock file, and a way
    to serve the scheduler."""

    app = APP
    topic = TOPIC

    def __init__(
        self,
        database_url: str,
        consent: ConsentStub,
        delivery: DeliveryStub,
        segmentation: SegmentationStub,
        addresses: dict[str, str],
        sandbox: Sandbox,
        clock_file: Path,
        delivery_url: str,
    ) -> None:
        self.database_url = database_url
        self.delivery_url = delivery_url
        self.consent = consent
        self.delivery = delivery
        self.segmentation = segmentation
        self.addresses = addresses
        self.sandbox = sandbox
        self.clock_file = clock_file

    @staticmethod
    async def eventually(
        check: Callable[[], Awaitable[bool]], *, within_s: float = 30.0, what: str = "condition"
    ) -> None:
        """Poll ``check`` until it holds; fail after a generous ``within_s`` seconds."""
        deadline = asyncio.get_running_loop().time() + within_s
        while not await check():
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{what} did not happen within {within_s} s")
            await asyncio.sleep(0.05)

    def scheduler_config(self, **extra: str) -> SchedulerConfig:
        """The scheduler on the test's database, pointed at the other services."""
        settings = {
            "CONSENT_ADDR": self.addresses["consent"],
            "DELIVERY_ADDR": self.addresses["delivery"],
            "SEGMENTATION_ADDR": self.addresses["segmentation"],
            "CLOCK_FILE": str(self.clock_file),
            "DISPATCH_POLL_S": "0.05",
        }
        settings.update(extra)
        return local_test_config(SchedulerConfig, self.database_url, **settings)

    def scheduler_process(self, logs: Path, **extra: str) -> ServiceProcess:
        """The scheduler as its own process (``python -m``, configured through the
        environment as ``make run`` does) on the test's database, pointed at the other
        services; ``extra`` settings by suffix (``DISPATCH_BATCH="20"``)."""
        port = free_port()
        settings = {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": self.database_url,
            "DB_POOL_SIZE": "2",
            "CONSENT_ADDR": self.addresses["consent"],
            "SEGMENTATION_ADDR": self.addresses["segmentation"],
            "DELIVERY_ADDR": self.addresses["delivery"],
            "CLOCK_FILE": str(self.clock_file),
            "DISPATCH_POLL_S": "0.05",
            "LOG_FORMAT": "text",
            **extra,
        }
        return ServiceProcess(
            "pushwarden.services.scheduler",
            "PUSHWARDEN_",
            port,
            {f"PUSHWARDEN_SCHEDULER_{name}": value for name, value in settings.items()},
            logs,
        )

    @contextlib.asynccontextmanager
    async def another_delivery(self, directory: Path, **extra: str) -> AsyncIterator[None]:
        """Another delivery service on a database of its own (``PORT`` may pin it). Not a
        replica on delivery's database: on SQLite its start-up migration would wait for
        the running one's write lock."""
        with _sibling_database(self.database_url, directory, "late_delivery") as url:
            async with self._delivery_at(url, **extra):
                yield

    @contextlib.asynccontextmanager
    async def _delivery_at(self, url: str, **extra: str) -> AsyncIterator[None]:
        config = local_test_config(
            DeliveryConfig,
            url,
            CONSENT_ADDR=self.addresses["consent"],
            CREDENTIALS=str(self.sandbox.credentials_file),
            CLOCK_FILE=str(self.clock_file),
            DISPATCH_POLL_S="0.05",
            **extra,
        )
        async with serving(delivery_bootstrap(config)):
            yield

    @contextlib.asynccontextmanager
    async def scheduler(self, **extra: str) -> AsyncIterator[SchedulerStub]:
        """Serve a scheduler app (its dispatch loops and outbox too)."""
        async with serving(bootstrap(self.scheduler_config(**extra))) as channel:
            stub: SchedulerStub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            yield stub

    async def pro_segment(self, users: list[str]) -> None:
        """``users`` on the "pro" plan, and the segment "pro" of everyone on it."""
        for start in range(0, len(users), 1000):
            await self.segmentation.UpsertProfiles(
                seg_messages.UpsertProfilesRequest(
                    app_id=APP,
                    profiles=[
                        seg_resources.ProfileUpdate(
                            user_id=user,
                            set_attributes={"plan": values_pb2.AttributeValue(string_value="pro")},
                        )
                        for user in users[start : start + 1000]
                    ],
                )
            )
        await self.create_pro_segment()

    async def create_pro_segment(self) -> None:
        """The segment "pro": everyone whose profile says plan = pro."""
        await self.segmentation.CreateSegment(
            seg_messages.CreateSegmentRequest(
                app_id=APP,
                segment=seg_resources.Segment(
                    segment_id="pro",
                    name="Pro users",
                    rule=seg_resources.Rule(
                        attribute=seg_resources.AttributePredicate(
                            filter=values_pb2.PropertyFilter(
                                name="plan",
                                operator=values_pb2.OPERATOR_EQ,
                                value=values_pb2.AttributeValue(string_value="pro"),
                            )
                        )
                    ),
                ),
            )
        )

    async def define_categories(self) -> None:
        """``promos`` (marketing, opted in by default) and ``orders`` (transactional)."""
        for category_id, kind in (
            ("promos", types_pb2.CATEGORY_KIND_MARKETING),
            ("orders", types_pb2.CATEGORY_KIND_TRANSACTIONAL),
        ):
            await self.consent.DefineCategory(
                messages_pb2.DefineCategoryRequest(
                    app_id=APP,
                    category=resources_pb2.Category(
                        category_id=category_id,
                        kind=kind,
                        default_state=resources_pb2.DEFAULT_STATE_OPTED_IN,
                    ),
                )
            )

    async def register(
        self,
        user_id: str,
        *,
        ios: bool = True,
        time_zone: str = "Europe/Paris",
        locale: str = "",
    ) -> resources_pb2.Device:
        """A device with notifications allowed: iOS on APNs, else Android on FCM."""
        number = next(_numbers)
        answer = await self.consent.RegisterDevice(
            messages_pb2.RegisterDeviceRequest(
                app_id=APP,
                device=resources_pb2.Device(
                    user_id=user_id,
                    platform=types_pb2.PLATFORM_IOS if ios else types_pb2.PLATFORM_ANDROID,
                    provider=types_pb2.PROVIDER_APNS if ios else types_pb2.PROVIDER_FCM,
                    token=f"{number:064x}" if ios else f"fcm-token-{number}",
                    time_zone=time_zone,
                    locale=locale,
                    permission=types_pb2.PERMISSION_STATE_GRANTED,
                ),
            )
        )
        return answer.device


@pytest.fixture
async def platform(any_database_url: str, tmp_path: Path) -> AsyncIterator[Platform]:
    """Consent, segmentation and delivery on their own databases of the test's backend, the
    fakes, and one clock file."""
    clock_file = tmp_path / "clock.json"
    async with contextlib.AsyncExitStack() as stack:
        sandbox = await stack.enter_async_context(
            provider_sandbox(tmp_path / "providers", app=APP, topic=TOPIC, project=PROJECT)
        )
        consent_url = stack.enter_context(_sibling_database(any_database_url, tmp_path, "consent"))
        delivery_url = stack.enter_context(
            _sibling_database(any_database_url, tmp_path, "delivery")
        )
        consent_app = consent_bootstrap(
            local_test_config(
                ConsentConfig, consent_url, PSEUDONYM_KEY=PSEUDONYM_KEY, CLOCK_FILE=str(clock_file)
            )
        )
        consent_channel = await stack.enter_async_context(serving(consent_app))
        assert consent_app.runtime is not None
        consent_addr = f"127.0.0.1:{consent_app.runtime.port}"
        delivery_app = delivery_bootstrap(
            local_test_config(
                DeliveryConfig,
                delivery_url,
                CONSENT_ADDR=consent_addr,
                CREDENTIALS=str(sandbox.credentials_file),
                CLOCK_FILE=str(clock_file),
                DISPATCH_POLL_S="0.05",
            )
        )
        delivery_channel = await stack.enter_async_context(serving(delivery_app))
        assert delivery_app.runtime is not None
        segmentation_url = stack.enter_context(
            _sibling_database(any_database_url, tmp_path, "segmentation")
        )
        segmentation_app = segmentation_bootstrap(
            local_test_config(
                SegmentationConfig,
                segmentation_url,
                CONSENT_ADDR=consent_addr,
                CLOCK_FILE=str(clock_file),
            )
        )
        segmentation_channel = await stack.enter_async_context(serving(segmentation_app))
        assert segmentation_app.runtime is not None
        built = Platform(
            any_database_url,
            consent_pb2_grpc.ConsentServiceStub(consent_channel),
            delivery_pb2_grpc.DeliveryServiceStub(delivery_channel),
            segmentation_pb2_grpc.SegmentationServiceStub(segmentation_channel),
            {
                "consent": consent_addr,
                "delivery": f"127.0.0.1:{delivery_app.runtime.port}",
                "segmentation": f"127.0.0.1:{segmentation_app.runtime.port}",
            },
            sandbox,
            clock_file,
            delivery_url,
        )
        await built.define_categories()
        yield built

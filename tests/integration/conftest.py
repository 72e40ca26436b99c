"""The integration suite: the platform as docker-compose.yml (with the sandbox profile and
deploy/compose.sandbox.yml) describes it, started as processes (see ``harness.py``), one
platform per test module, on SQLite files by default or on throwaway PostgreSQL databases
with ``PUSHWARDEN_TEST_DB=postgres``. Every test here is marked ``storage`` (so ``make
test-pg`` runs it on PostgreSQL) and ``integration``.

Scenarios talk to the services through their gRPC contracts only, move the shared clock
file instead of sleeping, and assert what the fake providers received through their
``/_sandbox/`` control routes.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.delivery.v1 import delivery_pb2_grpc
from pushwarden.runtime.testing import postgres_requested, postgres_unavailable_reason
from pushwarden.scheduler.v1 import scheduler_pb2_grpc
from pushwarden.segmentation.v1 import segmentation_pb2_grpc

from .harness import ComposePlatform, Fake

APP = "shop"  # the app deploy/sandbox/credentials.toml delivers for
_numbers = itertools.count(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``storage`` and ``integration``."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.path)).is_relative_to(here):
            item.add_marker(pytest.mark.storage)
            item.add_marker(pytest.mark.integration)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: starts the platform from docker-compose.yml as processes"
    )


@dataclass
class Platform:
    """The running platform and sync stubs for each service."""

    compose: ComposePlatform
    channels: list[grpc.Channel] = field(default_factory=list)

    def _channel(self, name: str) -> grpc.Channel:
        options = [("grpc.lb_policy_name", "round_robin")]
        channel = grpc.insecure_channel(self.compose.addr(name), options=options)
        self.channels.append(channel)
        return channel

    def __post_init__(self) -> None:
        self.consent = consent_pb2_grpc.ConsentServiceStub(self._channel("consent"))
        self.segmentation = segmentation_pb2_grpc.SegmentationServiceStub(
            self._channel("segmentation")
        )
        self.delivery = delivery_pb2_grpc.DeliveryServiceStub(self._channel("delivery"))
        self.scheduler = scheduler_pb2_grpc.SchedulerServiceStub(self._channel("scheduler"))

    @property
    def apns(self) -> Fake:
        return self.compose.fake("fake-apns")

    @property
    def fcm(self) -> Fake:
        return self.compose.fake("fake-fcm")

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def register(
        self,
        user_id: str,
        *,
        ios: bool = True,
        time_zone: str = "Europe/Paris",
        permission: types_pb2.PermissionState.ValueType = types_pb2.PERMISSION_STATE_GRANTED,
    ) -> resources_pb2.Device:
        """A device: iOS on APNs, else Android on FCM, with a token of its own."""
        number = next(_numbers)
        answer = self.consent.RegisterDevice(
            messages_pb2.RegisterDeviceRequest(
                app_id=APP,
                device=resources_pb2.Device(
                    user_id=user_id,
                    platform=types_pb2.PLATFORM_IOS if ios else types_pb2.PLATFORM_ANDROID,
                    provider=types_pb2.PROVIDER_APNS if ios else types_pb2.PROVIDER_FCM,
                    token=f"{number:064x}" if ios else f"fcm-token-{number}",
                    time_zone=time_zone,
                    permission=permission,
                ),
            )
        )
        return answer.device

    def define_category(
        self, category_id: str, kind: types_pb2.CategoryKind.ValueType, opted_in: bool = True
    ) -> None:
        self.consent.DefineCategory(
            messages_pb2.DefineCategoryRequest(
                app_id=APP,
                category=resources_pb2.Category(
                    category_id=category_id,
                    kind=kind,
                    default_state=resources_pb2.DEFAULT_STATE_OPTED_IN
                    if opted_in
                    else resources_pb2.DEFAULT_STATE_OPTED_OUT,
                ),
            )
        )

    def received(self, device: resources_pb2.Device) -> list[dict[str, Any]]:
        """The notifications the fake of ``device``'s provider accepted for its token, as
        the JSON body it received (answered 200), in arrival order."""
        fake = self.apns if device.provider == types_pb2.PROVIDER_APNS else self.fcm
        return [
            json.loads(request["body"])
            for request in fake.requests(token=device.token)
            if request["status"] == 200
        ]

    def titles(self, device: resources_pb2.Device) -> list[str]:
        """Titles ``device`` received (APNs or FCM)."""
        result = []
        for body in self.received(device):
            if "aps" in body:
                result.append(str(body["aps"]["alert"]["title"]))
            else:
                result.append(str(body["message"]["notification"]["title"]))
        return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, for :func:`logs_on_failure`."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the last lines of every service's log after a failed scenario."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and "platform" in request.fixturenames:
        platform: Platform = request.getfixturevalue("platform")
        print(platform.compose.logs())


def backend() -> str:
    if not postgres_requested():
        return "sqlite"
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.fail(f"PostgreSQL unavailable: {reason}", pytrace=False)
    return "postgres"


@pytest.fixture(scope="module")
def platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    """The platform for one test module, on the test run's backend; a module's
    ``REPLICAS = {"scheduler": 2, ...}`` runs several processes of a service."""
    replicas = dict(getattr(request.module, "REPLICAS", {}))
    chosen = backend()
    if replicas and chosen == "sqlite":
        pytest.skip("replicas share one PostgreSQL database (make test-pg)")
    with tempfile.TemporaryDirectory(prefix="pw-integration-") as directory:
        compose = ComposePlatform(Path(directory), backend=chosen, replicas=replicas).start()
        built = Platform(compose)
        try:
            yield built
        finally:
            built.close()
            compose.stop()

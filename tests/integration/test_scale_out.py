"""Scale-out: scenario 2 with two scheduler and two delivery processes on one PostgreSQL
database each, the test's client balancing round-robin over both schedulers and the
schedulers reaching delivery through a target listing both replicas: the same result, no
duplicate at the providers, no cap exceeded, nothing lost. PostgreSQL only (make test-pg)."""

from __future__ import annotations

import pytest

from pushwarden.common.v1 import types_pb2

from .conftest import Platform
from .test_campaign import CAP, run_scenario_2, set_up_scenario_2

REPLICAS = {"scheduler": 2, "delivery": 2}


@pytest.fixture(scope="module", autouse=True)
def world(platform: Platform) -> None:
    set_up_scenario_2(platform)


def test_scenario_2_on_two_schedulers_and_two_deliveries(platform: Platform) -> None:
    assert [len(platform.compose.processes[name]) for name in ("scheduler", "delivery")] == [2, 2]
    # The peers of each scheduler list both delivery replicas.
    for index in range(2):
        target = platform.compose.env("scheduler", index)["PUSHWARDEN_SCHEDULER_DELIVERY_ADDR"]
        assert target == "ipv4:" + ",".join(platform.compose.addresses["delivery"])

    outcome = run_scenario_2(platform)

    # Exactly one provider request per expected push, whatever replica made it: nothing
    # lost, nothing twice (a retried or doubly claimed send would show here), nobody over
    # the cap.
    for user, (device, titles) in outcome.items():
        fake = platform.apns if device.provider == types_pb2.PROVIDER_APNS else platform.fcm
        requests = fake.requests(token=device.token)
        assert len(requests) == len(titles), user
        assert all(request["status"] == 200 for request in requests), user
        assert len(titles) <= CAP, user
    # Every replica is still up.
    for group in platform.compose.processes.values():
        for process in group:
            assert process.popen is not None
            assert process.popen.poll() is None, process.name

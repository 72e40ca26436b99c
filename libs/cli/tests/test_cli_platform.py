"""The operator CLI driven end to end against the running platform (the supervisor's
four service processes and the fake APNs and FCM): apply files (the README's set-up file,
twice: nothing changes), start a campaign and watch it complete, find the pushes at the
fake APNs, explain a decision, statistics, export a user from every service and erase
them through consent until nothing is left elsewhere; the lifecycle verbs on a scheduled
campaign; and a service's refusal as one line naming the field."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from pushwarden.common.v1 import types_pb2, values_pb2
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.segmentation.v1 import messages_pb2 as segmentation_messages
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_resources
from pushwarden.segmentation.v1 import segmentation_pb2_grpc

from .conftest import APP, Platform, readme_files

pytestmark = [pytest.mark.storage, pytest.mark.slow]

# The README's set-up file: the app's categories, policy and audience.
SETUP = readme_files()[0]

# user -> (plan, OS permission); ada and bob get the push, carl has notifications off,
# dora is not on the pro plan.
USERS = {
    "ada": ("pro", types_pb2.PERMISSION_STATE_GRANTED),
    "bob": ("pro", types_pb2.PERMISSION_STATE_GRANTED),
    "carl": ("pro", types_pb2.PERMISSION_STATE_DENIED),
    "dora": ("free", types_pb2.PERMISSION_STATE_GRANTED),
}


def token_of(user: str) -> str:
    return user.encode().hex().ljust(64, "0")


def campaign_document(key: str, name: str, schedule: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "kind": "Campaign",
            "key": key,
            "spec": {
                "name": name,
                "category_id": "promos",
                "audience": {"include_segment_ids": ["pro"]},
                "variants": [
                    {
                        "variant_id": "A",
                        "weight": 100,
                        "template": {"content": {"title": name, "body": "20 % off today"}},
                    }
                ],
                "schedule": schedule,
            },
        }
    ]


def seed_users(platform: Platform) -> None:
    """What the app's backend does: devices at consent, profiles at segmentation."""
    with grpc.insecure_channel(platform.addresses["consent"]) as channel:
        consent = consent_pb2_grpc.ConsentServiceStub(channel)
        for user, (_plan, permission) in USERS.items():
            consent.RegisterDevice(
                consent_messages.RegisterDeviceRequest(
                    app_id=APP,
                    device=consent_resources.Device(
                        user_id=user,
                        platform=types_pb2.PLATFORM_IOS,
                        provider=types_pb2.PROVIDER_APNS,
                        token=token_of(user),
                        time_zone="Europe/Paris",
                        permission=permission,
                    ),
                ),
                timeout=10,
            )
    with grpc.insecure_channel(platform.addresses["segmentation"]) as channel:
        segmentation = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        segmentation.UpsertProfiles(
            segmentation_messages.UpsertProfilesRequest(
                app_id=APP,
                profiles=[
                    segmentation_resources.ProfileUpdate(
                        user_id=user,
                        set_attributes={"plan": values_pb2.AttributeValue(string_value=plan)},
                    )
                    for user, (plan, _permission) in USERS.items()
                ],
            ),
            timeout=10,
        )


def eventually(check: Callable[[], Any], what: str, within_s: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within_s} s")
        time.sleep(0.3)
    return found


def test_an_operator_runs_a_campaign_end_to_end(platform: Platform, tmp_path: Path) -> None:
    setup = tmp_path / "setup.yaml"
    setup.write_text(SETUP, encoding="utf-8")
    spring = tmp_path / "spring.json"
    spring.write_text(
        json.dumps(campaign_document("spring-sale", "Spring sale", {"immediate": {}})),
        encoding="utf-8",
    )

    # apply: everything created, then the same files again change nothing.
    first = platform.cli("apply", "-f", str(setup), "-f", str(spring), "--json").json()
    assert [(a["kind"], a["name"], a["result"]) for a in first] == [
        ("Category", "promos", "created"),
        ("Category", "orders", "created"),
        ("Policy", APP, "created"),
        ("Segment", "pro", "created"),
        ("Campaign", "spring-sale", "created"),
    ]
    campaign_id = first[-1]["id"]
    again = platform.cli("apply", "-f", str(setup), "-f", str(spring))
    assert again.code == 0, again.stderr
    assert again.stdout.count("unchanged") == 5, again.stdout
    assert campaign_id in again.stdout
    categories = platform.cli("categories", "--json").json()
    assert {c["category_id"]: c["kind"] for c in categories} == {
        "orders": "CATEGORY_KIND_TRANSACTIONAL",
        "promos": "CATEGORY_KIND_MARKETING",
    }
    policy = platform.cli("policy", "--json").json()
    assert [rule["rule_id"] for rule in policy["cap_rules"]] == ["three-a-day"]
    assert "three-a-day" in platform.cli("policy").stdout

    # start and watch until it completes: ada and bob are sent, carl is dropped.
    seed_users(platform)
    watched = platform.cli(
        "campaign", "start", campaign_id, "--watch", "--interval", "0.2", "--max-wait", "120"
    )
    assert watched.code == 0, watched.stderr
    assert "COMPLETED" in watched.stdout
    assert "NO_PERMISSION" in watched.stdout  # the decisions table
    final = platform.cli("campaign", "show", campaign_id, "--json").json()
    assert final["state"] == "CAMPAIGN_STATE_COMPLETED"
    progress = final["progress"]
    assert (progress["audience_size"], progress["sent"], progress["dropped"]) == ("3", "2", "1")
    listed = platform.cli("campaigns", "--json").json()
    assert [c["campaign_id"] for c in listed] == [campaign_id]

    # The pushes reached the fake APNs: ada's and bob's devices, nobody else's.
    for user in ("ada", "bob"):
        token = token_of(user)
        received = eventually(lambda: platform.fake_apns_requests(token), f"{user}'s push")  # noqa: B023
        assert len(received) == 1
        assert json.loads(received[0]["body"])["aps"]["alert"]["title"] == "Spring sale"
    for user in ("carl", "dora"):
        assert platform.fake_apns_requests(token_of(user)) == []

    # decisions: who got what, who was held back and why.
    decisions = platform.cli("campaign", "decisions", campaign_id, "--json").json()
    assert {d["user_id"]: d["decision"]["outcome"] for d in decisions} == {
        "ada": "OUTCOME_ALLOW",
        "bob": "OUTCOME_ALLOW",
        "carl": "OUTCOME_DROP",
    }
    dropped = platform.cli("campaign", "decisions", campaign_id, "--outcome", "drop")
    assert dropped.code == 0, dropped.stderr
    assert "carl" in dropped.stdout
    assert "NO_PERMISSION" in dropped.stdout
    assert "ada" not in dropped.stdout

    # explain: carl's trace says why nothing reached him.
    explained = platform.cli("explain", "carl", "--campaign", campaign_id)
    assert explained.code == 0, explained.stderr
    assert "DROP (NO_PERMISSION)" in explained.stdout
    assert "OS_PERMISSION" in explained.stdout
    trace = platform.cli("explain", "carl", "--campaign", campaign_id, "--json").json()
    assert trace["decision"]["outcome"] == "OUTCOME_DROP"
    assert trace["decision"]["reason"] == "REASON_CODE_NO_PERMISSION"

    # stats: delivery's figures, once both pushes were accepted by the fake.
    def delivered() -> dict[str, Any] | None:
        stats = platform.cli("campaign", "stats", campaign_id, "--json").json()
        return stats if stats["total"].get("delivered") == "2" else None

    stats = eventually(delivered, "two deliveries in the statistics")
    assert (stats["total"]["targeted"], stats["total"]["sent"]) == ("3", "2")
    table = platform.cli("campaign", "stats", campaign_id)
    assert table.code == 0, table.stderr
    assert "variant A" in table.stdout

    # export: every service holds something about ada.
    exported = tmp_path / "ada.json"
    summary = platform.cli("user", "export", "ada", "-o", str(exported))
    assert summary.code == 0, summary.stderr
    document = json.loads(exported.read_text(encoding="utf-8"))
    assert [d["token"] for d in document["consent"]["devices"]] == [token_of("ada")]
    assert document["segmentation"]["profile"]["attributes"]["plan"] == {"string_value": "pro"}
    assert [c["campaign_id"] for c in document["scheduler"]["contacts"]] == [campaign_id]
    assert len(document["delivery"]["deliveries"]) == 1

    # erase through consent (asked first: declining erases nothing), and wait until
    # nothing is left anywhere else.
    declined = platform.cli("user", "erase", "ada", stdin="n\n")
    assert declined.code == 1
    assert declined.stderr.strip().endswith("pushwarden: aborted: nothing was done")
    assert platform.cli("user", "export", "ada", "--json").json()["consent"]["devices"]
    erased = platform.cli("user", "erase", "ada", "--yes", "--wait", "60", "--json").json()
    assert erased["devices_deleted"] == 1
    assert erased["verified_empty"] == ["segmentation", "scheduler", "delivery"]
    after = platform.cli("user", "export", "ada", "--json").json()
    assert after["consent"].get("devices", []) == []
    assert not after["segmentation"].get("profile")
    assert after["scheduler"]["contacts"] == []
    assert after["delivery"]["deliveries"] == []
    assert platform.cli("user", "erase", "ada", "--yes", "--json").json()["already_erased"]


def test_pause_resume_and_cancel_a_scheduled_campaign(platform: Platform, tmp_path: Path) -> None:
    setup = tmp_path / "setup.yaml"
    setup.write_text(SETUP, encoding="utf-8")
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    evening = tmp_path / "evening.json"
    evening.write_text(
        json.dumps(
            campaign_document(
                "evening", "Evening", {"at": {"send_at": later.isoformat().replace("+00:00", "Z")}}
            )
        ),
        encoding="utf-8",
    )
    applied = platform.cli("apply", "-f", str(setup), "-f", str(evening), "--json").json()
    campaign_id = applied[-1]["id"]
    started = platform.cli("campaign", "start", campaign_id)
    assert started.stdout.strip() == f"campaign {campaign_id} is SCHEDULED"
    # Watching a campaign that is not due for hours gives up when told to.
    line = platform.cli("campaign", "watch", campaign_id, "--max-wait", "1").one_error_line()
    assert line.startswith(f"pushwarden: campaign {campaign_id} is still SCHEDULED after 1 s"), line
    for verb, state in (
        ("start", "SCHEDULED"),
        ("pause", "PAUSED"),
        ("pause", "PAUSED"),
        ("resume", "SCHEDULED"),
        ("cancel", "CANCELLED"),
    ):
        answer = platform.cli("campaign", verb, campaign_id)
        assert answer.code == 0, answer.stderr
        assert answer.stdout.strip() == f"campaign {campaign_id} is {state}"
    # A cancelled campaign cannot start: the scheduler's refusal, one line.
    line = platform.cli("campaign", "start", campaign_id).one_error_line()
    assert line.startswith("pushwarden: FAILED_PRECONDITION: "), line
    assert line.endswith("[scheduler]"), line
    watched = platform.cli("campaign", "watch", campaign_id, "--json").json()
    assert watched["state"] == "CAMPAIGN_STATE_CANCELLED"


def test_a_refused_resource_is_one_line_naming_the_field(
    platform: Platform, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: Category\nspec: {category_id: news, kind: CATEGORY_KIND_MARKETING}\n",
        encoding="utf-8",
    )
    result = platform.cli("--app", "other-app", "apply", "-f", str(bad))
    line = result.one_error_line()
    assert result.code == 1
    assert line.startswith(f"pushwarden: {bad}#1 (Category news): INVALID_ARGUMENT: "), line
    assert "category.default_state: required" in line, line
    assert line.endswith("[consent]"), line
    # Nothing was applied, and a campaign the scheduler never saw is NOT_FOUND.
    assert platform.cli("--app", "other-app", "categories", "--json").json() == []
    missing = platform.cli("campaign", "show", "nope").one_error_line()
    assert missing.startswith("pushwarden: NOT_FOUND: "), missing

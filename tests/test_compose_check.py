"""`make compose-check` accepts the real docker-compose.yml and rejects broken copies,
each with a message naming the problem (no container engine runs here, so this is the
compose file's only test)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "compose_check.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "compose"


def _load_problems_in() -> Callable[..., list[str]]:
    # The tool is a script, not a package module: load it from its file, in-process, so
    # that the many broken files below do not each pay for a new interpreter.
    spec = importlib.util.spec_from_file_location("pushwarden_tools_compose_check", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    problems_in: Callable[..., list[str]] = module.problems_in
    return problems_in


problems_in = _load_problems_in()


def compose_check(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), str(path), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split(": ", 1)[1] for line in result.stdout.splitlines()]


def test_the_real_compose_file_passes() -> None:
    result = compose_check(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "with compose.sandbox.yml: OK" in result.stdout
    assert "fake-apns, fake-fcm" in result.stdout


def test_make_compose_check_default_is_the_real_file() -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "misspelt-variable.yml",
            [
                "consent: PUSHWARDEN_CONSENT_PSEUDONYM_KYE is not a setting of consent "
                "(did you mean PUSHWARDEN_CONSENT_PSEUDONYM_KEY?)"
            ],
        ),
        (
            "missing-service.yml",
            [
                "service 'segmentation' is missing",
                "scheduler: must depend on segmentation (scheduler calls segmentation)",
            ],
        ),
        (
            "port-clash.yml",
            ["delivery: host port 50051 is already published by consent"],
        ),
        (
            "dependency-against-the-call-graph.yml",
            [
                "consent: depends on scheduler, which the call graph does not allow "
                "(consent calls nobody)"
            ],
        ),
        (
            "wrong-service-prefix.yml",
            [
                "scheduler: PUSHWARDEN_DELIVERY_ADDR does not carry the service's prefix "
                "PUSHWARDEN_SCHEDULER_ (the service never reads it)"
            ],
        ),
        ("missing-healthcheck.yml", ["segmentation: has no healthcheck"]),
        (
            "segmentation-without-consent.yml",
            ["segmentation: must depend on consent (segmentation calls consent)"],
        ),
        (
            "published-on-every-interface.yml",
            [
                "consent: '50051:50051' publishes on every interface "
                "(publish on 127.0.0.1, e.g. '127.0.0.1:50051:50051')"
            ],
        ),
        (
            "password-in-the-file.yml",
            [
                "postgres: POSTGRES_PASSWORD must come from the environment with no default "
                "(${POSTGRES_PASSWORD:?...}), not '${POSTGRES_PASSWORD:-pushwarden}'",
                "delivery: PUSHWARDEN_DELIVERY_DATABASE_URL must take its password from the "
                "environment (${POSTGRES_PASSWORD}), not from a literal or a default",
            ],
        ),
    ],
)
def test_a_broken_compose_file_is_rejected_with_a_message_per_problem(
    fixture: str, expected: list[str]
) -> None:
    assert problems_in(FIXTURES / fixture) == expected


def test_values_are_checked_through_the_config_classes(tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    broken = tmp_path / "docker-compose.yml"
    # A bad port value and a PostgreSQL consent without its pseudonym key.
    broken.write_text(
        text.replace("context: .\n", f"context: {ROOT}\n")
        .replace('PUSHWARDEN_SEGMENTATION_PORT: "50052"', 'PUSHWARDEN_SEGMENTATION_PORT: "5oo52"')
        .replace("      PUSHWARDEN_CONSENT_PSEUDONYM_KEY:", "      X_UNUSED:")
    )
    found = problems_in(broken)
    assert (
        "consent: PUSHWARDEN_CONSENT_PSEUDONYM_KEY: required when "
        "PUSHWARDEN_CONSENT_DATABASE_URL is a PostgreSQL URL" in found
    )
    assert any(p.startswith("segmentation: PUSHWARDEN_SEGMENTATION_PORT: '5oo52'") for p in found)


def test_segmentation_reaches_consent_for_its_feed_and_nothing_else_calls_it(
    tmp_path: Path,
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    segmentation = compose["services"]["segmentation"]
    assert segmentation["environment"]["PUSHWARDEN_SEGMENTATION_CONSENT_ADDR"] == (
        "dns:///consent:50051"
    )
    assert set(segmentation["depends_on"]) == {"postgres", "consent"}
    # A segmentation that also waited for the scheduler would close a cycle.
    text = (ROOT / "docker-compose.yml").read_text().replace("context: .\n", f"context: {ROOT}\n")
    cyclic = text.replace(
        "      consent:\n        condition: service_healthy\n    healthcheck:\n"
        '      test: ["CMD", "python", "-m", "pushwarden.runtime.healthprobe", "--addr", '
        '"127.0.0.1:50052"]',
        "      consent:\n        condition: service_healthy\n      scheduler:\n"
        "        condition: service_healthy\n    healthcheck:\n"
        '      test: ["CMD", "python", "-m", "pushwarden.runtime.healthprobe", "--addr", '
        '"127.0.0.1:50052"]',
    )
    assert cyclic != text
    path = tmp_path / "docker-compose.yml"
    path.write_text(cyclic)
    assert problems_in(path) == [
        "segmentation: depends on scheduler, which the call graph does not allow "
        "(segmentation calls consent)"
    ]


def test_every_published_port_is_on_loopback_and_the_password_has_no_default() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, spec in compose["services"].items():
        for entry in spec.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), (name, entry)
    password = compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?")


def test_a_file_without_services_is_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "docker-compose.yml"
    empty.write_text("version: '3'\n")
    assert problems_in(empty) == ["no 'services' mapping"]


def test_the_command_exits_1_and_prints_one_line_per_problem() -> None:
    result = compose_check(FIXTURES / "missing-service.yml", "--no-sandbox")
    assert result.returncode == 1
    assert len(problems(result)) == 2


def test_a_dockerfile_missing_a_library_or_running_as_root_is_rejected(tmp_path: Path) -> None:
    # delivery builds from a copy of its directory whose Dockerfile forgets the contracts
    # library and the USER line; the other services build from the repository.
    copy = tmp_path / "services" / "delivery"
    copy.mkdir(parents=True)
    for name in ("pyproject.toml", "Dockerfile.dockerignore"):
        (copy / name).write_text((ROOT / "services" / "delivery" / name).read_text())
    dockerfile = (ROOT / "services" / "delivery" / "Dockerfile").read_text()
    (copy / "Dockerfile").write_text(
        dockerfile.replace("COPY libs/contracts libs/contracts\n", "").replace(
            "USER pushwarden\n", ""
        )
    )
    compose = (
        (ROOT / "docker-compose.yml").read_text().replace("context: .\n", f"context: {ROOT}\n")
    )
    compose = compose.replace(
        f"context: {ROOT}\n      dockerfile: services/delivery/Dockerfile",
        f"context: {tmp_path}\n      dockerfile: services/delivery/Dockerfile",
    )
    (tmp_path / "docker-compose.yml").write_text(compose)
    assert problems_in(tmp_path / "docker-compose.yml") == [
        "delivery: services/delivery/Dockerfile does not copy libs/contracts, "
        "which the service depends on",
        "delivery: services/delivery/Dockerfile runs as root (needs a USER)",
    ]


# --- the sandbox profile and override ---------------------------------------------------

OVERRIDE = ROOT / "deploy" / "compose.sandbox.yml"
CREDENTIALS = ROOT / "deploy" / "sandbox" / "credentials.toml"


def sandbox_problems(
    tmp_path: Path,
    compose: Callable[[str], str] = lambda text: text,
    override: Callable[[str], str] = lambda text: text,
    credentials: Callable[[str], str] = lambda text: text,
) -> list[str]:
    """The problems of edited copies of the compose file, the sandbox override and its
    credentials file (builds still from the repository)."""
    text = (ROOT / "docker-compose.yml").read_text().replace("context: .\n", f"context: {ROOT}\n")
    edited = compose(text)
    assert edited != text or compose("") == ""
    (tmp_path / "docker-compose.yml").write_text(edited)
    (tmp_path / "deploy" / "sandbox").mkdir(parents=True)
    (tmp_path / "deploy" / "compose.sandbox.yml").write_text(override(OVERRIDE.read_text()))
    (tmp_path / "deploy" / "sandbox" / "credentials.toml").write_text(
        credentials(CREDENTIALS.read_text())
    )
    return problems_in(tmp_path / "docker-compose.yml", tmp_path / "deploy" / "compose.sandbox.yml")


def test_the_real_files_pass_with_the_sandbox(tmp_path: Path) -> None:
    assert problems_in(ROOT / "docker-compose.yml", OVERRIDE) == []
    assert sandbox_problems(tmp_path) == []


def test_a_fake_outside_the_sandbox_profile_or_a_service_inside_one_is_rejected(
    tmp_path: Path,
) -> None:
    def edit(text: str) -> str:
        text = text.replace("    profiles: [sandbox]\n", "", 1)  # fake-apns
        return text.replace(
            "  scheduler:\n    <<: *service-defaults\n",
            "  scheduler:\n    <<: *service-defaults\n    profiles: [full]\n",
        )

    assert sandbox_problems(tmp_path, compose=edit) == [
        "scheduler: is in profiles ['full'], so a plain `docker compose up` would not start "
        "it (only the fakes are a profile)",
        "fake-apns: must be in the profile 'sandbox' alone",
    ]


def test_a_fake_listening_on_another_port_than_it_publishes_is_rejected(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return text.replace('"--port", "50061"', '"--port", "50071"')

    assert sandbox_problems(tmp_path, compose=edit) == [
        "fake-apns: listens on --port 50071 but publishes container port(s) 50061",
        "fake-apns: healthcheck does not probe its port 50071",
    ]


def test_fakes_sharing_their_state_volume_must_start_one_after_the_other(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        start = text.index("    depends_on:\n      fake-apns:")
        end = text.index("    volumes:", start)
        return text[:start] + text[end:]

    assert sandbox_problems(tmp_path, compose=edit) == [
        "fake-fcm: shares the volume sandbox-state with fake-apns but does not wait for it "
        "(depends_on), so both could write the TLS CA at once"
    ]


def test_the_override_changes_delivery_only_and_waits_for_both_fakes(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        text = text.replace(
            "      fake-fcm:\n        condition: service_healthy\n",
            "",
        )
        return text + "  scheduler:\n    stop_grace_period: 5s\n"

    assert sandbox_problems(tmp_path, override=edit) == [
        "compose.sandbox.yml: changes scheduler; the sandbox override may change delivery only",
        "compose.sandbox.yml: delivery must wait for fake-fcm",
    ]


def test_credentials_must_reach_the_fakes_with_keys_on_their_volume(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return text.replace("https://fake-fcm:50062", "https://fcm.googleapis.com").replace(
            "/var/lib/pushwarden/sandbox/apns-demo-key.p8", "/etc/keys/apns.p8"
        )

    assert sandbox_problems(tmp_path, credentials=edit) == [
        "deploy/sandbox/credentials.toml: apps.shop.apns.key_file is not on the fakes' "
        "state volume",
        "deploy/sandbox/credentials.toml: apps.shop.fcm.endpoint is "
        "'https://fcm.googleapis.com', not the fake's 'https://fake-fcm:50062'",
    ]


def test_delivery_must_trust_the_fakes_ca(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return text.replace(
            "      REQUESTS_CA_BUNDLE: /var/lib/pushwarden/sandbox/sandbox-ca.pem\n", ""
        )

    assert sandbox_problems(tmp_path, override=edit) == [
        "compose.sandbox.yml: delivery's REQUESTS_CA_BUNDLE must name the fakes' CA on their "
        "state volume"
    ]

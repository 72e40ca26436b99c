"""Config: typed, frozen, built once from PUSHWARDEN_<SERVICE>_* and failing in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from pushwarden.runtime.config import (
    ConfigError,
    ServiceConfig,
    config_from_env_or_exit,
    load_config,
    port_setting,
    setting,
    settings_markdown,
    settings_table,
)
from pushwarden.runtime.settings import CallerGrant, TlsSettings


@dataclass(frozen=True, kw_only=True)
class SampleConfig(ServiceConfig):
    """A service config as a service would declare it."""

    SERVICE: ClassVar[str] = "sample"
    port: int = port_setting(50099)
    batch_size: int = setting(500, help="Users per batch.", minimum=1, maximum=10_000)
    ratio: float = setting(0.5, help="A fraction.", minimum=0.0, maximum=1.0)
    dry_run: bool = setting(False, help="Log instead of acting.")
    mode: Literal["fast", "safe"] = setting("safe", help="How to run.")
    secret: str | None = setting(None, help="An optional secret.")
    regions: tuple[str, ...] = setting(("eu",), help="Regions served.")


@dataclass(frozen=True, kw_only=True)
class RequiredConfig(ServiceConfig):
    SERVICE: ClassVar[str] = "needy"
    api_key: str = setting(help="Must be given.")


def load(**env: str) -> SampleConfig:
    return load_config(SampleConfig, environ={f"PUSHWARDEN_SAMPLE_{k}": v for k, v in env.items()})


def error_of(config_cls: type[ServiceConfig] = SampleConfig, /, **env: str) -> str:
    service = config_cls.SERVICE.upper()
    with pytest.raises(ConfigError) as info:
        load_config(config_cls, environ={f"PUSHWARDEN_{service}_{k}": v for k, v in env.items()})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_when_nothing_is_set() -> None:
    config = load()
    assert config.service == "sample"
    assert (config.host, config.port) == ("0.0.0.0", 50099)
    assert config.database_url == "sqlite:///var/sample.db"
    assert (config.batch_size, config.ratio, config.dry_run, config.mode) == (
        500,
        0.5,
        False,
        "safe",
    )
    assert config.secret is None
    assert config.regions == ("eu",)
    assert config.callers == ()
    assert config.server_settings().tls is None


def test_values_are_parsed_by_annotation() -> None:
    config = load(
        HOST="127.0.0.1",
        PORT="0",
        BATCH_SIZE="10_000",
        RATIO="0.25",
        DRY_RUN="yes",
        MODE="FAST",
        SECRET="s3",
        REGIONS="eu, us ,",
        GRACE_PERIOD_S="2.5",
        LOG_LEVEL="debug",
        LOG_FORMAT="text",
    )
    assert (config.host, config.port, config.batch_size) == ("127.0.0.1", 0, 10_000)
    assert (config.ratio, config.dry_run, config.mode, config.secret) == (0.25, True, "fast", "s3")
    assert config.regions == ("eu", "us")
    assert config.log_settings().level == "DEBUG"
    assert config.log_settings().format == "text"
    assert config.server_settings().grace_period_s == 2.5


def test_an_empty_variable_counts_as_unset() -> None:
    assert load(SECRET="", PORT="  ").port == 50099


def test_config_is_frozen() -> None:
    config = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": "abc"}, "PUSHWARDEN_SAMPLE_PORT: 'abc' is not an integer (expected 0-65535)"),
        ({"PORT": "70000"}, "PUSHWARDEN_SAMPLE_PORT: '70000' is out of range (expected 0-65535)"),
        ({"RATIO": "1.5"}, "PUSHWARDEN_SAMPLE_RATIO: '1.5' is out of range (expected 0-1)"),
        ({"RATIO": "nan"}, "PUSHWARDEN_SAMPLE_RATIO: 'nan' is not a finite number (expected 0-1)"),
        ({"DRY_RUN": "maybe"}, "PUSHWARDEN_SAMPLE_DRY_RUN: 'maybe' is not a boolean"),
        ({"MODE": "reckless"}, "PUSHWARDEN_SAMPLE_MODE: 'reckless' is not one of fast, safe"),
        ({"LOG_FORMAT": "xml"}, "PUSHWARDEN_SAMPLE_LOG_FORMAT: 'xml' is not one of json, text"),
        ({"DB_POOL_SIZE": "0"}, "PUSHWARDEN_SAMPLE_DB_POOL_SIZE: '0' is out of range"),
        (
            {"PROT": "1"},
            "PUSHWARDEN_SAMPLE_PROT: unknown setting (did you mean PUSHWARDEN_SAMPLE_PORT?)",
        ),
        (
            {"OTEL_EXPORTER": "otlp"},
            "PUSHWARDEN_SAMPLE_OTEL_ENDPOINT: required when PUSHWARDEN_SAMPLE_OTEL_EXPORTER=otlp",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env: dict[str, str], expected: str) -> None:
    assert error_of(SampleConfig, **env).startswith(expected)


def test_a_missing_required_setting_is_named() -> None:
    assert error_of(RequiredConfig) == "PUSHWARDEN_NEEDY_API_KEY: required but not set"
    assert load_config(RequiredConfig, environ={"PUSHWARDEN_NEEDY_API_KEY": "k"}).api_key == "k"


def test_other_services_variables_are_ignored() -> None:
    config = load_config(
        SampleConfig, environ={"PUSHWARDEN_CONSENT_PORT": "abc", "PUSHWARDEN_TEST_DB": "postgres"}
    )
    assert config.port == 50099


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        (
            "PUSHWARDEN_CONSNET_PORT",
            "PUSHWARDEN_CONSNET_PORT: unknown setting: CONSNET looks like a misspelling of the "
            "service name CONSENT (did you mean PUSHWARDEN_CONSENT_PORT?)",
        ),
        (
            "PUSHWARDEN_CONSET_TLS_CERT",
            "PUSHWARDEN_CONSET_TLS_CERT: unknown setting: CONSET looks like a misspelling of "
            "the service name CONSENT (did you mean PUSHWARDEN_CONSENT_TLS_CERT?)",
        ),
        (
            "PUSHWARDEN_CONSENTT_PSEUDONYM_KYE",
            "PUSHWARDEN_CONSENTT_PSEUDONYM_KYE: unknown setting: CONSENTT looks like a "
            "misspelling of the service name CONSENT (settings of it start PUSHWARDEN_CONSENT_)",
        ),
        (
            "PUSHWARDEN_COMSEMT_PORT",
            "PUSHWARDEN_COMSEMT_PORT: unknown setting: COMSEMT looks like a misspelling of the "
            "service name CONSENT (did you mean PUSHWARDEN_CONSENT_PORT?)",
        ),
    ],
)
def test_a_prefix_one_or_two_edits_from_the_service_name_is_refused(
    variable: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(SampleConfig, "consent", {variable: "1"})
    assert str(caught.value) == expected


def test_prefixes_of_other_services_and_tools_are_not_taken_for_misspellings() -> None:
    others = {
        f"PUSHWARDEN_{name}_PORT": "1"
        for name in ("CONSENT", "SEGMENTATION", "SCHEDULER", "DELIVERY", "SANDBOX", "TEST")
    }
    others |= {"PUSHWARDEN_TEST_PG_URL": "x", "PUSHWARDEN_CONSNT": "no setting part"}
    for service in ("consent", "segmentation", "scheduler", "delivery"):
        env = {
            k: v for k, v in others.items() if not k.startswith(f"PUSHWARDEN_{service.upper()}_")
        }
        assert load_config(SampleConfig, service, env).service == service
    # Three edits away is another name, not a typo.
    assert load_config(SampleConfig, "consent", {"PUSHWARDEN_CONTACT_PORT": "1"}).port == 50099


def test_service_name_can_be_passed_instead_of_declared() -> None:
    config = load_config(SampleConfig, "other", {"PUSHWARDEN_OTHER_PORT": "7"})
    assert (config.service, config.port, config.database_url) == (
        "other",
        7,
        "sqlite:///var/other.db",
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://u@h/db", "unsupported driver 'mysql'"),
        ("postgresql+psycopg2://u@h/db", "unsupported driver 'postgresql+psycopg2'"),
        ("sqlite://", "in-memory SQLite is not supported"),
        ("postgresql+psycopg://u@h", "names no database"),
    ],
)
def test_a_malformed_database_url_fails_at_load(url: str, problem: str) -> None:
    message = error_of(DATABASE_URL=url)
    assert message.startswith("PUSHWARDEN_SAMPLE_DATABASE_URL: ")
    assert problem in message


def test_database_urls_are_normalised_to_the_installed_driver() -> None:
    assert load(DATABASE_URL="postgresql://u:p@db:5432/x").database_url == (
        "postgresql+psycopg://u:p@db:5432/x"
    )
    settings = load(DATABASE_URL="sqlite:///tmp/x.db", DB_POOL_SIZE="3").database_settings()
    assert (settings.url, settings.pool_size) == ("sqlite:///tmp/x.db", 3)


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name in ("cert", "key", "ca"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN PLACEHOLDER-----\n")
        paths[name] = str(path)
    return paths


def test_tls_and_mtls_from_existing_paths(pem_files: dict[str, str]) -> None:
    tls_only = load(TLS_CERT=pem_files["cert"], TLS_KEY=pem_files["key"]).server_settings().tls
    assert tls_only == TlsSettings(Path(pem_files["cert"]), Path(pem_files["key"]), None)
    mtls = load(
        TLS_CERT=pem_files["cert"], TLS_KEY=pem_files["key"], TLS_CLIENT_CA=pem_files["ca"]
    ).server_settings()
    assert mtls.tls is not None
    assert mtls.tls.client_ca_file == Path(pem_files["ca"])


def test_tls_problems_name_the_variable(pem_files: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.pem")
    assert error_of(TLS_CERT=missing, TLS_KEY=pem_files["key"]) == (
        f"PUSHWARDEN_SAMPLE_TLS_CERT: file {missing!r} does not exist"
    )
    assert error_of(TLS_CERT=pem_files["cert"]) == (
        "PUSHWARDEN_SAMPLE_TLS_KEY: required when PUSHWARDEN_SAMPLE_TLS_CERT is set"
    )
    assert error_of(TLS_CLIENT_CA=pem_files["ca"]).startswith(
        "PUSHWARDEN_SAMPLE_TLS_CLIENT_CA: requires PUSHWARDEN_SAMPLE_TLS_CERT and "
    )
    assert error_of(
        TLS_CERT=pem_files["cert"], TLS_KEY=pem_files["key"], TLS_CLIENT_CA=missing
    ).startswith("PUSHWARDEN_SAMPLE_TLS_CLIENT_CA: file ")


def write_tokens(tmp_path: Path, body: str) -> str:
    path = tmp_path / "tokens.toml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_auth_tokens_file_becomes_caller_grants(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"scheduler-secret").hexdigest()
    path = write_tokens(
        tmp_path,
        f"""
        [[caller]]
        name = "scheduler"
        token_sha256 = "{digest.upper()}"
        methods = ["/pushwarden.consent.v1.ConsentService/CheckEligibility"]

        [[caller]]
        name = "dev"
        token = "dev-token-123"
        methods = ["*", "/pushwarden.consent.v1.ConsentService/*"]
        apps = ["shop", "travel"]
        """,
    )
    callers = load(AUTH_TOKENS_FILE=path).server_settings().callers
    assert callers == (
        CallerGrant(
            "scheduler", digest, ("/pushwarden.consent.v1.ConsentService/CheckEligibility",)
        ),
        CallerGrant(
            "dev",
            hashlib.sha256(b"dev-token-123").hexdigest(),
            ("*", "/pushwarden.consent.v1.ConsentService/*"),
            apps=("shop", "travel"),
        ),
    )
    assert callers[0].apps == ("*",)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("[[caller]\nname=", "invalid TOML"),
        ("", "defines no [[caller]] table"),
        (
            '[[caller]]\nname = "a"\nmethods = ["*"]\n',
            "give exactly one of 'token_sha256' or 'token'",
        ),
        (
            '[[caller]]\nname = "a"\ntoken_sha256 = "abc"\nmethods = ["*"]\n',
            "must be 64 hex digits",
        ),
        (
            '[[caller]]\nname = "a"\ntoken = "long-enough"\nmethods = []\n',
            "'methods' must be a non-empty",
        ),
        (
            '[[caller]]\nname = "a"\ntoken = "long-enough"\nmethods = ["Check"]\n',
            "method 'Check' is not",
        ),
        (
            '[[caller]]\ntoken = "long-enough"\nmethods = ["*"]\n',
            "'name' must be a non-empty string",
        ),
        (
            '[[caller]]\nname = "a"\ntoken = "long-enough"\nmethods = ["*"]\nrole = "x"\n',
            "unknown key(s) role",
        ),
        (
            '[[caller]]\nname = "a"\ntoken = "long-enough"\nmethods = ["*"]\napps = []\n',
            "'apps' must be a non-empty list",
        ),
        (
            '[[caller]]\nname = "a"\ntoken = "token-one"\nmethods = ["*"]\n'
            '[[caller]]\nname = "a"\ntoken = "token-two"\nmethods = ["*"]\n',
            "caller name 'a' appears twice",
        ),
        (
            '[[caller]]\nname = "a"\ntoken = "same-token"\nmethods = ["*"]\n'
            '[[caller]]\nname = "b"\ntoken = "same-token"\nmethods = ["*"]\n',
            "reuses another caller's token",
        ),
    ],
)
def test_a_malformed_auth_tokens_file_is_named(tmp_path: Path, body: str, problem: str) -> None:
    message = error_of(AUTH_TOKENS_FILE=write_tokens(tmp_path, body))
    assert message.startswith("PUSHWARDEN_SAMPLE_AUTH_TOKENS_FILE: ")
    assert problem in message


def test_a_missing_auth_tokens_file_is_named(tmp_path: Path) -> None:
    assert "does not exist" in error_of(AUTH_TOKENS_FILE=str(tmp_path / "nope.toml"))


def test_derived_settings_for_the_other_runtime_parts() -> None:
    config = load(
        OTEL_EXPORTER="otlp", OTEL_ENDPOINT="http://collector:4317", MAX_MESSAGE_BYTES="2048"
    )
    telemetry = config.telemetry_settings()
    assert (telemetry.service_name, telemetry.exporter, telemetry.otlp_endpoint) == (
        "pushwarden-sample",
        "otlp",
        "http://collector:4317",
    )
    assert config.server_settings().max_message_bytes == 2048
    assert config.env_name("callers") == "PUSHWARDEN_SAMPLE_AUTH_TOKENS_FILE"


def test_settings_table_lists_base_and_service_variables() -> None:
    table = {doc.env_name: doc for doc in settings_table(SampleConfig)}
    base = {f.name for f in dataclasses.fields(ServiceConfig)} - {"service"}
    assert len(table) == len(base) + 6
    for suffix in (
        "HOST",
        "PORT",
        "DATABASE_URL",
        "AUTH_TOKENS_FILE",
        "TLS_CLIENT_CA",
        "BATCH_SIZE",
    ):
        assert f"PUSHWARDEN_SAMPLE_{suffix}" in table
    assert table["PUSHWARDEN_SAMPLE_PORT"].default == "50099"
    assert table["PUSHWARDEN_SAMPLE_PORT"].type == "int 0-65535"
    assert table["PUSHWARDEN_SAMPLE_DATABASE_URL"].default == "sqlite:///var/sample.db"
    assert table["PUSHWARDEN_SAMPLE_MODE"].type == "fast|safe"
    assert all(doc.help for doc in table.values())


def test_or_exit_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        config_from_env_or_exit(SampleConfig, environ={"PUSHWARDEN_SAMPLE_PORT": "abc"})
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "PUSHWARDEN_SAMPLE_PORT: 'abc' is not an integer (expected 0-65535)\n"
    )


def test_a_process_with_a_bad_port_stops_at_start(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from dataclasses import dataclass
        from typing import ClassVar
        from pushwarden.runtime.config import ServiceConfig, config_from_env_or_exit, port_setting

        @dataclass(frozen=True, kw_only=True)
        class ConsentConfig(ServiceConfig):
            SERVICE: ClassVar[str] = "consent"
            port: int = port_setting(50051)

        config = config_from_env_or_exit(ConsentConfig)
        print("started on", config.port)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={"PUSHWARDEN_CONSENT_PORT": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == "PUSHWARDEN_CONSENT_PORT: 'abc' is not an integer (expected 0-65535)\n"


def test_settings_markdown_has_a_row_per_variable() -> None:
    markdown = settings_markdown([(SampleConfig, None), (RequiredConfig, None)])
    rows = markdown.splitlines()[2:]
    assert len(rows) == len(settings_table(SampleConfig)) + len(settings_table(RequiredConfig))
    assert "| `PUSHWARDEN_SAMPLE_MODE` | fast\\|safe | `safe` | How to run. |" in rows
    assert any(row.startswith("| `PUSHWARDEN_NEEDY_API_KEY` |") for row in rows)

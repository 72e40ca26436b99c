"""How the CLI reaches a service and how it fails: a bad file names the field before
anything is sent, an unreachable service is one line naming it, and against consent
serving TLS with client certificates (mTLS) and auth on, the CLI's --ca-file,
--cert-file, --key-file and --token (or their PUSHWARDEN_CLI_* variables) are what let
it in."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from pushwarden.cli.manifests import load_files
from pushwarden.runtime.healthprobe import check
from pushwarden.runtime.tlsgen import TestPki, generate_test_pki

from .conftest import clean_environment, database_urls, free_ports, readme_files, run_cli

TOKEN = "operator-test-token"
TOKENS_FILE = f"""\
[[caller]]
name = "operator"
token = "{TOKEN}"
methods = ["*"]
apps = ["shop"]
"""


def cli_env(**extra: str) -> dict[str, str]:
    return clean_environment() | {"PUSHWARDEN_CLI_APP": "shop"} | extra


def test_a_bad_file_is_one_line_naming_the_field_and_nothing_is_sent(tmp_path: Path) -> None:
    # Every address is unreachable: a file problem must be found before any call.
    nowhere = {f"PUSHWARDEN_CLI_{s}_ADDR": "127.0.0.1:1" for s in ("CONSENT", "SCHEDULER")}
    cases = [
        (
            "kind: Category\nspec: {category_id: news, kindd: CATEGORY_KIND_MARKETING}\n",
            "#1: spec.kindd: unknown field",
        ),
        (
            "kind: Category\nspec: {category_id: news, kind: CATEGORY_KIND_NOPE}\n",
            "#1: spec.kind: Invalid enum value CATEGORY_KIND_NOPE",
        ),
        ("kind: Segment\nspec: {name: no id}\n", "#1: spec.segment_id: required"),
        (
            "kind: Campaign\nspec: {name: x, variants: [{variant_id: A, weight: lots}]}\n",
            "#1: spec.variants.weight: ",
        ),
        (
            "kind: Campaign\nspec: {name: x, state: CAMPAIGN_STATE_RUNNING}\n",
            "#1: spec.state: output only",
        ),
        ("kind: Template\nspec: {}\n", "#1: kind: 'Template' is not one of Category"),
        ("kind: Policy\nspec: {}\n---\nkind: Segment\nspecs: {}\n", "#2: specs: unknown key"),
        ("kind: [unclosed\n", ": not YAML (line 2, column 1)"),
    ]
    for number, (text, expected) in enumerate(cases):
        path = tmp_path / f"bad{number}.yaml"
        path.write_text(text, encoding="utf-8")
        result = run_cli(["apply", "-f", str(path)], cli_env(**nowhere))
        line = result.one_error_line()
        assert result.code == 2, line
        assert line.startswith(f"pushwarden: {path}{expected}"), line
    broken = tmp_path / "broken.json"
    broken.write_text('[{"kind": "Category", "spec": {]', encoding="utf-8")
    line = run_cli(["apply", "-f", str(broken)], cli_env()).one_error_line()
    assert line.startswith(f"pushwarden: {broken}: not JSON (line 1, column 32"), line
    missing = run_cli(["apply", "-f", str(tmp_path / "none.yaml")], cli_env()).one_error_line()
    assert (
        missing == f"pushwarden: {tmp_path / 'none.yaml'}: cannot read (No such file or directory)"
    )


def test_the_readme_campaign_file_is_a_valid_campaign(tmp_path: Path) -> None:
    [_setup, campaign] = readme_files()
    path = tmp_path / "spring.yaml"
    path.write_text(campaign, encoding="utf-8")
    [resource] = load_files([str(path)], "shop")
    assert (resource.kind, resource.name) == ("Campaign", "spring-sale")
    assert [v.variant_id for v in resource.message.variants] == ["A", "B"]  # type: ignore[attr-defined]


def test_an_unreachable_service_is_one_line_naming_it() -> None:
    [port] = free_ports(1)
    env = cli_env(PUSHWARDEN_CLI_SCHEDULER_ADDR=f"127.0.0.1:{port}", PUSHWARDEN_CLI_TIMEOUT_S="3")
    result = run_cli(["campaign", "show", "cmp_1"], env)
    line = result.one_error_line()
    assert result.code == 1
    assert line.startswith(
        f"pushwarden: UNAVAILABLE: scheduler at 127.0.0.1:{port} cannot be reached"
    ), line
    # The flag wins over the variable.
    result = run_cli(["--delivery-addr", f"127.0.0.1:{port}", "campaign", "stats", "c"], env)
    assert result.one_error_line().startswith(
        f"pushwarden: UNAVAILABLE: delivery at 127.0.0.1:{port} cannot be reached"
    )
    assert run_cli(["--consent-addr", "nonsense", "categories"], env).one_error_line() == (
        "pushwarden: --consent-addr: 'nonsense' is not host:port"
    )


@dataclass(frozen=True)
class SecureConsent:
    address: str
    pki: TestPki


@pytest.fixture
def secure_consent(tmp_path: Path) -> Iterator[SecureConsent]:
    """Consent alone, serving TLS that requires client certificates, with auth on."""
    pki = generate_test_pki(tmp_path / "tls")
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS_FILE, encoding="utf-8")
    [port] = free_ports(1)
    with contextlib.ExitStack() as stack:
        env = (
            clean_environment()
            | database_urls(stack, ["consent"])
            | {
                "PUSHWARDEN_CONSENT_HOST": "127.0.0.1",
                "PUSHWARDEN_CONSENT_PORT": str(port),
                "PUSHWARDEN_CONSENT_LOG_FORMAT": "text",
                "PUSHWARDEN_CONSENT_PSEUDONYM_KEY": "k" * 64,
                "PUSHWARDEN_CONSENT_TLS_CERT": str(pki.server_cert),
                "PUSHWARDEN_CONSENT_TLS_KEY": str(pki.server_key),
                "PUSHWARDEN_CONSENT_TLS_CLIENT_CA": str(pki.ca_cert),
                "PUSHWARDEN_CONSENT_AUTH_TOKENS_FILE": str(tokens),
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "pushwarden.services.consent"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(grpc.RpcError):
                    status = check(
                        address,
                        timeout_s=1.0,
                        ca_file=pki.ca_cert,
                        cert_file=pki.client_cert,
                        key_file=pki.client_key,
                    )
                    if status == "SERVING":
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"consent did not serve: {process.communicate()[1]}")
                time.sleep(0.2)
            yield SecureConsent(address, pki)
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.storage
@pytest.mark.slow
def test_tls_client_certificates_and_the_token_let_the_cli_in(
    secure_consent: SecureConsent, tmp_path: Path
) -> None:
    pki = secure_consent.pki
    env = cli_env(PUSHWARDEN_CLI_CONSENT_ADDR=secure_consent.address)
    tls = ["--ca-file", str(pki.ca_cert), "--cert-file", str(pki.client_cert)]
    tls += ["--key-file", str(pki.client_key)]

    # Plain text to a TLS server, and TLS without the client certificate mTLS needs.
    for args in ([], ["--ca-file", str(pki.ca_cert)]):
        result = run_cli([*args, "--token", TOKEN, "categories"], env)
        assert result.one_error_line().startswith(
            f"pushwarden: UNAVAILABLE: consent at {secure_consent.address} cannot be reached"
        )
    # TLS right, but no token; then the token for an app it is not allowed.
    line = run_cli([*tls, "categories"], env).one_error_line()
    assert line.startswith("pushwarden: UNAUTHENTICATED: "), line
    line = run_cli([*tls, "--token", TOKEN, "--app", "other", "categories"], env).one_error_line()
    assert line.startswith("pushwarden: PERMISSION_DENIED: "), line
    assert "reason APP_NOT_ALLOWED" in line, line

    # Everything right, from the flags and from the variables alike.
    category = tmp_path / "category.yaml"
    category.write_text(
        "kind: Category\nspec: {category_id: promos, kind: CATEGORY_KIND_MARKETING, "
        "default_state: DEFAULT_STATE_OPTED_IN}\n",
        encoding="utf-8",
    )
    applied = run_cli([*tls, "--token", TOKEN, "apply", "-f", str(category), "--json"], env)
    assert [a["result"] for a in applied.json()] == ["created"]
    by_variables = env | {
        "PUSHWARDEN_CLI_TOKEN": TOKEN,
        "PUSHWARDEN_CLI_CA_FILE": str(pki.ca_cert),
        "PUSHWARDEN_CLI_CERT_FILE": str(pki.client_cert),
        "PUSHWARDEN_CLI_KEY_FILE": str(pki.client_key),
    }
    listed = run_cli(["categories", "--json"], by_variables).json()
    assert [c["category_id"] for c in listed] == ["promos"]
    again = run_cli(["apply", "-f", str(category), "--json"], by_variables).json()
    assert [a["result"] for a in again] == ["unchanged"]

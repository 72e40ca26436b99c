"""Code that uses the generated stubs is type-checked through their .pyi files."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

GOOD = """
import grpc
from pushwarden.common.v1 import decision_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2


async def allowed(channel: grpc.aio.Channel) -> list[str]:
    stub = consent_pb2_grpc.ConsentServiceStub(channel)
    request = messages_pb2.CheckEligibilityRequest(app_id="a", category_id="c", user_ids=["u"])
    response = await stub.CheckEligibility(request, timeout=2.0)
    return [u.user_id for u in response.users if u.reason == decision_pb2.REASON_CODE_UNSPECIFIED]


class Devices(consent_pb2_grpc.ConsentServiceServicer):
    async def ListDevices(
        self,
        request: messages_pb2.ListDevicesRequest,
        context: grpc.aio.ServicerContext[
            messages_pb2.ListDevicesRequest, messages_pb2.ListDevicesResponse
        ],
    ) -> messages_pb2.ListDevicesResponse:
        return messages_pb2.ListDevicesResponse(next_page_token=request.page_token)
"""

# Each line is a mistake the stubs must catch.
BAD = """
from pushwarden.consent.v1 import messages_pb2
from pushwarden.delivery.v1 import resources_pb2

messages_pb2.CheckEligibilityRequest(user_ids=[1, 2])
messages_pb2.CheckEligibilityRequest(page=3)
count: str = messages_pb2.ListDevicesRequest().page_size
resources_pb2.Send().device_token
"""


def _mypy(venv_bin: Path, repo_root: Path, tmp_path: Path, source: str) -> str:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(source), encoding="utf-8")
    result = subprocess.run(
        [
            str(venv_bin / "python"),
            "-m",
            "mypy",
            "--config-file",
            str(repo_root / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--no-error-summary",
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=repo_root,
        check=False,
    )
    return result.stdout + result.stderr


@pytest.mark.slow
def test_stubs_type_check_client_and_server_code(
    venv_bin: Path, repo_root: Path, tmp_path: Path
) -> None:
    assert _mypy(venv_bin, repo_root, tmp_path, GOOD) == ""
    errors = _mypy(venv_bin, repo_root, tmp_path, BAD)
    assert 'snippet.py:5: error: List item 0 has incompatible type "int"' in errors, errors
    assert 'snippet.py:6: error: Unexpected keyword argument "page"' in errors, errors
    assert 'Incompatible types in assignment (expression has type "int"' in errors, errors
    assert '"Send" has no attribute "device_token"' in errors, errors

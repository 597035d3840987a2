"""Settings read the forms people write first, and a bad one is one line, in every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfyfleet.config import Settings
from comfyfleet.errors import SettingsError

LISTS = ("COMFYFLEET_BACKENDS", "COMFYFLEET_API_KEYS", "COMFYFLEET_MODEL_ROOTS")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    """Set environment variables for one test, with every comfyfleet variable cleared first."""
    for name in list(os.environ):
        if name.startswith("COMFYFLEET_") or name.startswith("COMFYUI_"):
            monkeypatch.delenv(name)

    def set_(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return set_


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:8188", ["http://127.0.0.1:8188"]),
        ("a=http://h:1, b=http://h:2", ["a=http://h:1", "b=http://h:2"]),
        ('["a=http://h:1","http://h:2"]', ["a=http://h:1", "http://h:2"]),
        ("", []),
        ("[]", []),
    ],
)
def test_backends_take_comma_separated_or_json(env, text: str, expected: list[str]) -> None:
    env(COMFYFLEET_BACKENDS=text)
    assert Settings().backends == expected


def test_api_keys_and_paths_take_the_comma_form(env) -> None:
    env(COMFYFLEET_API_KEYS="abc:admin,def:read", COMFYFLEET_VOLUME_BASES="/mnt/vol")
    settings = Settings()
    assert settings.api_keys == ["abc:admin", "def:read"]
    assert settings.volume_bases == [Path("/mnt/vol")]
    env(COMFYFLEET_VOLUME_BASES="/a, /b", COMFYFLEET_MODEL_ROOTS='["/c"]')
    settings = Settings()
    assert settings.volume_bases == [Path("/a"), Path("/b")]
    assert settings.model_roots == [Path("/c")]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("COMFYFLEET_PORT", "abc", "COMFYFLEET_PORT='abc': Input should be a valid integer"),
        ("COMFYFLEET_MAX_ATTEMPTS", "0", "COMFYFLEET_MAX_ATTEMPTS='0': Input should be greater"),
        ("COMFYFLEET_LOG_JSON", "maybe", "expected true or false"),
        ("COMFYFLEET_BACKENDS", "[oops", "COMFYFLEET_BACKENDS='[oops': starts with '['"),
        ("COMFYFLEET_BACKENDS", "[1]", "COMFYFLEET_BACKENDS[0]=1: Input should be a valid string"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    env, variable: str, value: str, expected: str
) -> None:
    env(**{variable: value})
    with pytest.raises(SettingsError) as caught:
        Settings()
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert "(expected " in message


COMMANDS = [
    ["run", "w.json", "--comfy", "http://127.0.0.1:9"],
    ["paths", "--root", "."],
    ["models", "list"],
    ["health"],
    ["agent", "--gateway", "http://127.0.0.1:9", "--comfy", "http://127.0.0.1:9"],
    ["serve", "--port", "0"],
    ["worker"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_every_command_reports_a_bad_setting_in_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "w.json").write_text("{}")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYFLEET_", "COMFYUI_"))}
    env = {**base, "COMFYFLEET_LOG_JSON": "maybe", "COMFYFLEET_DATA_DIR": str(tmp_path / "d")}
    run = subprocess.run(
        [sys.executable, "-m", "comfyfleet.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "COMFYFLEET_LOG_JSON='maybe'" in lines[0] and "Traceback" not in run.stderr


def test_only_declared_variables_are_read_never_bare_field_names(env) -> None:
    """A platform's PORT/HOST/JOB_TIMEOUT must not reconfigure the gateway; ours and the
    listed legacy names do; keyword arguments in code still use field names."""
    env(PORT="1234", JOB_TIMEOUT="5", BACKENDS="http://elsewhere:1", COMFYUI_URL="http://c:1")
    settings = Settings()
    assert settings.port == Settings.model_fields["port"].default
    assert settings.job_timeout == Settings.model_fields["job_timeout"].default
    assert settings.backends == Settings.model_fields["backends"].get_default(
        call_default_factory=True
    )
    assert settings.comfy_url == "http://c:1"  # a legacy name listed with the field
    env(COMFYFLEET_PORT="9001")
    assert Settings().port == 9001
    assert Settings(port=5).port == 5


def test_a_legacy_name_spelled_like_the_field_is_still_read(env) -> None:
    """``MODELS`` (seed 002's variable) is declared for ``models``: it must keep working."""
    env(MODELS="org/a:a.safetensors:vae")
    assert Settings().models == "org/a:a.safetensors:vae"

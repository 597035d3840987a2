"""The one settings object. Every environment variable comfyfleet reads is declared here.

Names are ``COMFYFLEET_<FIELD>``; where the field already has a name people use (RunPod's
reference worker, the seeds), that name is accepted too, e.g. ``COMFYUI_URL`` or
``BUCKET_ENDPOINT_URL``. Nothing is read at import time: call `Settings()` (or `get_settings()`).
"""

from __future__ import annotations

import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from comfyfleet.envforms import LIST_FORM, split_list
from comfyfleet.errors import SettingsError


def _env(field: str, *legacy: str) -> AliasChoices:
    return AliasChoices(f"COMFYFLEET_{field.upper()}", *legacy)


# Lists read from the environment without pydantic-settings' JSON-only decoding.
StrList = Annotated[list[str], NoDecode]
PathList = Annotated[list[Path], NoDecode]

_FORMS: dict[Any, str] = {
    bool: "true or false (1/0, yes/no, on/off)",
    int: "a whole number",
    float: "a number",
    str: "text",
    Path: "a path",
}


def expected_form(annotation: Any) -> str:
    """What a value of ``annotation`` looks like in an environment variable."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return expected_form(inner[0])
    if typing.get_origin(annotation) is list:
        return LIST_FORM
    return _FORMS.get(annotation, "a valid value")


class _DeclaredVariablesOnly(EnvSettingsSource):
    """The environment as declared: a field is read from its ``COMFYFLEET_*`` variable (and the
    legacy names listed with it), never from its bare name, so an unrelated ``PORT`` or
    ``HOST`` in the environment (PaaS, Kubernetes service links) cannot leak into Settings.
    (``populate_by_name`` is for keyword arguments in code, not for the environment.)"""

    def _extract_field_info(self, field: Any, field_name: str, *args: Any, **kwargs: Any) -> Any:
        found = super()._extract_field_info(field, field_name, *args, **kwargs)
        if field.validation_alias is None:
            return found
        # (field key, variable, complex): the bare-name entry is the one keyed by the field's
        # own name; a legacy alias spelled like it (MODELS for ``models``) is keyed by itself.
        return [info for info in found if info[0] != field_name]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = _DeclaredVariablesOnly(settings_cls)
        return init_settings, env, dotenv_settings, file_secret_settings

    # --- ComfyUI -------------------------------------------------------------------------
    comfy_url: str = Field(
        default="http://127.0.0.1:8188", validation_alias=_env("comfy_url", "COMFYUI_URL")
    )
    comfy_dir: Path | None = Field(
        default=None,
        validation_alias=_env("comfy_dir", "COMFYUI_DIR"),
        description="Launch ComfyUI from this checkout (main.py) instead of using comfy_url.",
    )
    comfy_args: str = Field(
        default="--listen 127.0.0.1 --port 8188 --disable-auto-launch",
        validation_alias=_env("comfy_args", "COMFYUI_ARGS"),
    )
    comfy_python: str | None = Field(
        default=None, validation_alias=_env("comfy_python"), description="Python for main.py."
    )
    comfy_ready_timeout: float = Field(default=600.0, validation_alias=_env("comfy_ready_timeout"))
    comfy_input_dir: Path | None = Field(
        default=None,
        validation_alias=_env("comfy_input_dir"),
        description="ComfyUI's input folder when local (RAM-disk fast path, wiping).",
    )
    comfy_output_dir: Path | None = Field(default=None, validation_alias=_env("comfy_output_dir"))
    backend_folders: dict[str, dict[Literal["input", "output"], Path]] = Field(
        default_factory=dict,
        validation_alias=_env("backend_folders"),
        description="Gateway: ComfyUI's input/output folders per backend name or URL (JSON), "
        'e.g. {"gpu0": {"input": "/srv/gpu0/input", "output": "/srv/gpu0/output"}}; '
        "others are learned from ComfyUI when they are on this host.",
    )
    templates_dir: Path | None = Field(
        default=None,
        validation_alias=_env("templates_dir", "COMFYUI_WORKFLOWS_DIR"),
        description="Directory of saved API-format workflow templates (NAME.json).",
    )
    default_template: str | None = Field(
        default=None,
        validation_alias=_env("default_template"),
        description="Worker: template for requests naming no workflow (seed 001's default).",
    )
    comfy_org_api_key: str | None = Field(
        default=None,
        validation_alias=_env("comfy_org_api_key", "COMFY_ORG_API_KEY"),
        description="Key for ComfyUI's API nodes when a request brings none (extra_data).",
    )

    # --- jobs --------------------------------------------------------------------------
    job_timeout: float = Field(default=1800.0, validation_alias=_env("job_timeout"))
    max_attempts: int = Field(default=3, ge=1, validation_alias=_env("max_attempts"))
    max_input_bytes: int = Field(default=64 * 2**20, validation_alias=_env("max_input_bytes"))
    max_request_bytes: int = Field(default=256 * 2**20, validation_alias=_env("max_request_bytes"))
    url_max_redirects: int = Field(default=3, validation_alias=_env("url_max_redirects"))
    url_timeout: float = Field(default=60.0, validation_alias=_env("url_timeout"))
    allow_private_urls: bool = Field(
        default=False,
        validation_alias=_env("allow_private_urls"),
        description="Allow input URLs that resolve to private/loopback/link-local addresses.",
    )

    # --- worker ------------------------------------------------------------------------
    min_free_memory_bytes: int = Field(
        default=512 * 2**20, validation_alias=_env("min_free_memory_bytes")
    )
    min_free_disk_bytes: int = Field(
        default=1024 * 2**20, validation_alias=_env("min_free_disk_bytes")
    )
    wipe_zero_fill: bool = Field(default=False, validation_alias=_env("wipe_zero_fill"))
    swarm_url: str | None = Field(
        default=None, validation_alias=_env("swarm_url", "SWARMUI_URL", "SWARM_URL")
    )

    # --- S3 outputs (names of RunPod's reference worker) ------------------------------------
    bucket_endpoint_url: str | None = Field(
        default=None, validation_alias=_env("bucket_endpoint_url", "BUCKET_ENDPOINT_URL")
    )
    bucket_access_key_id: str | None = Field(
        default=None, validation_alias=_env("bucket_access_key_id", "BUCKET_ACCESS_KEY_ID")
    )
    bucket_secret_access_key: str | None = Field(
        default=None,
        validation_alias=_env("bucket_secret_access_key", "BUCKET_SECRET_ACCESS_KEY"),
    )
    bucket_name: str | None = Field(
        default=None, validation_alias=_env("bucket_name", "BUCKET_NAME")
    )
    bucket_region: str | None = Field(
        default=None, validation_alias=_env("bucket_region", "BUCKET_REGION")
    )
    bucket_presign_seconds: int | None = Field(
        default=None,
        validation_alias=_env("bucket_presign_seconds"),
        description="Return presigned GET URLs valid this long instead of plain URLs.",
    )

    # --- gateway -----------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", validation_alias=_env("host"))
    port: int = Field(default=8080, validation_alias=_env("port"))
    data_dir: Path = Field(default=Path(".comfyfleet"), validation_alias=_env("data_dir"))
    database_url: str | None = Field(
        default=None,
        validation_alias=_env("database_url"),
        description="postgresql://... to scale out; default is SQLite under data_dir.",
    )
    backends: StrList = Field(
        default_factory=list,
        validation_alias=_env("backends"),
        description="ComfyUI URLs (or name=URL) the gateway feeds with local agents "
        "(comma-separated or a JSON list).",
    )
    api_keys: StrList = Field(
        default_factory=list,
        validation_alias=_env("api_keys"),
        description='Bearer keys as "token:role" with role read, submit, admin or agent '
        "(comma-separated or a JSON list).",
    )
    lease_seconds: float = Field(default=30.0, validation_alias=_env("lease_seconds"))
    agent_expiry_seconds: float = Field(
        default=600.0,
        gt=0,
        validation_alias=_env("agent_expiry_seconds"),
        description="A remote agent that has not called in for this long (and holds no task) "
        "is forgotten; what it executed stays in the totals.",
    )
    # --- fleet (dispatch) ------------------------------------------------------------------
    prefetch_depth: int = Field(
        default=2,
        ge=0,
        le=32,
        validation_alias=_env("prefetch_depth"),
        description="Tasks kept uploaded and waiting in each local ComfyUI's own queue behind "
        "the running one, so it never waits for the gateway (0 = one prompt at a time).",
    )
    retry_backoff: float = Field(
        default=1.0,
        validation_alias=_env("retry_backoff"),
        description="First retry's delay in seconds; doubles per attempt (max 60).",
    )
    runpod_endpoint: str | None = Field(
        default=None,
        validation_alias=_env("runpod_endpoint"),
        description="RunPod endpoint id or base URL running `comfyfleet worker`; "
        "the gateway forwards tasks to it.",
    )
    runpod_api_key: str | None = Field(
        default=None, validation_alias=_env("runpod_api_key", "RUNPOD_API_KEY")
    )
    runpod_concurrency: int = Field(
        default=4,
        ge=1,
        validation_alias=_env("runpod_concurrency"),
        description="Tasks in flight at the RunPod endpoint at once.",
    )
    runpod_sync: bool = Field(
        default=False,
        validation_alias=_env("runpod_sync"),
        description="Use /runsync instead of /run + /status.",
    )
    pools: list[str | dict[str, object]] | str = Field(
        default_factory=list,
        validation_alias=_env("pools"),
        description="Worker pools the gateway starts and scales: NAME=PROVIDER:key=value,... "
        "entries separated by ';' or a JSON list (of such strings or objects); see "
        "docs/fleet.md, 'Worker pools'.",
    )
    gateway_url: str | None = Field(
        default=None,
        validation_alias=_env("gateway_url"),
        description="`comfyfleet agent`: the gateway to pull tasks from.",
    )
    agent_token: str | None = Field(
        default=None,
        validation_alias=_env("agent_token"),
        description="`comfyfleet agent`: bearer token with role agent.",
    )
    agent_name: str | None = Field(
        default=None,
        validation_alias=_env("agent_name"),
        description="`comfyfleet agent`: backend name (default: the ComfyUI host:port).",
    )
    api_key: str | None = Field(
        default=None,
        validation_alias=_env("api_key"),
        description="SDK/CLI (`comfyfleet submit`): bearer token sent to a gateway.",
    )
    api_key: str | None = Field(
        default=None,
        validation_alias=_env("api_key"),
        description="SDK/CLI (`comfyfleet submit`): bearer token sent to a gateway.",
    )
    webhook_secret: str | None = Field(default=None, validation_alias=_env("webhook_secret"))
    webhook_max_attempts: int = Field(
        default=8, ge=1, validation_alias=_env("webhook_max_attempts")
    )
    webhook_backoff: float = Field(
        default=2.0,
        gt=0,
        validation_alias=_env("webhook_backoff"),
        description="Seconds before the first webhook retry; doubles per attempt (max 10 min).",
    )
    webhook_timeout: float = Field(default=10.0, gt=0, validation_alias=_env("webhook_timeout"))
    webhook_progress_interval: float = Field(
        default=1.0,
        ge=0,
        validation_alias=_env("webhook_progress_interval"),
        description="Seconds between two task.progress callbacks of one task (the latest "
        "step of an interval is sent at its end).",
    )
    database_schema: str = Field(
        default="comfyfleet",
        validation_alias=_env("database_schema"),
        description="PostgreSQL schema of the queue's tables (one per gateway cluster).",
    )

    # --- models and volumes ---------------------------------------------------------------
    model_roots: PathList = Field(
        default_factory=list,
        validation_alias=_env("model_roots"),
        description="Model folders to use as they are (comma-separated or a JSON list).",
    )
    volume_bases: PathList = Field(
        default_factory=lambda: [Path("/runpod-volume"), Path("/workspace")],
        validation_alias=_env("volume_bases"),
        description="Mount points searched for model roots (comma-separated or a JSON list).",
    )
    models: str | None = Field(
        default=None,
        validation_alias=_env("models", "MODELS"),
        description="RepoID:Filename:Target,... (seed 002's list).",
    )
    hf_token: str | None = Field(default=None, validation_alias=_env("hf_token", "HF_TOKEN"))
    hf_cache_dir: Path | None = Field(
        default=None,
        validation_alias=_env("hf_cache_dir"),
        description="Host cache in Hugging Face layout, e.g. /runpod-volume/huggingface-cache.",
    )
    model_cache_bytes: int = Field(default=50 * 2**30, validation_alias=_env("model_cache_bytes"))
    model_cache_root: Path | None = Field(
        default=None,
        validation_alias=_env("model_cache_root"),
        description="Worker and agents: model root for the files a job asks for (default: the "
        "first model root found, else COMFYUI_DIR/models).",
    )
    warmup_workflow: Path | None = Field(default=None, validation_alias=_env("warmup_workflow"))
    warmup_timeout: float = Field(default=900.0, validation_alias=_env("warmup_timeout"))

    # --- provisioning: ComfyUI / SwarmUI installed onto the volume (runtime/provision*.py) ---
    provision: Literal["off", "auto"] = Field(
        default="off",
        validation_alias=_env("provision"),
        description="auto: `comfyfleet worker` (and the image's entrypoint) installs ComfyUI "
        "onto the volume when it lacks it or its pinned versions changed; off: use COMFYUI_DIR.",
    )
    provision_dir: Path | None = Field(
        default=None,
        validation_alias=_env("provision_dir"),
        description="Where `comfyfleet provision` installs (ComfyUI/, venv/, SwarmUI/); default: "
        "the first volume base that exists.",
    )
    comfyui_repo: str = Field(
        default="https://github.com/comfyanonymous/ComfyUI", validation_alias=_env("comfyui_repo")
    )
    comfyui_ref: str = Field(default="v0.8.0", validation_alias=_env("comfyui_ref"))
    comfyui_commit: str | None = Field(
        default=None,
        validation_alias=_env("comfyui_commit"),
        description="Commit the ref must resolve to (default: v0.8.0's, when the ref is v0.8.0).",
    )
    custom_nodes: StrList = Field(
        default_factory=list,
        validation_alias=_env("custom_nodes"),
        description="Custom nodes to install: URL@REF entries (comma-separated or a JSON list).",
    )
    custom_nodes_file: Path | None = Field(
        default=None,
        validation_alias=_env("custom_nodes_file"),
        description="More custom nodes, in docker/custom_nodes.txt's form (name url ref [reqs]).",
    )
    provision_index_url: str | None = Field(
        default=None, validation_alias=_env("provision_index_url")
    )
    provision_extra_index_urls: StrList = Field(
        default_factory=list, validation_alias=_env("provision_extra_index_urls")
    )
    provision_find_links: StrList = Field(
        default_factory=list, validation_alias=_env("provision_find_links")
    )
    provision_no_index: bool = Field(default=False, validation_alias=_env("provision_no_index"))
    swarmui: bool = Field(
        default=False,
        validation_alias=_env("swarmui"),
        description="Install SwarmUI onto the volume too, and have the worker launch it.",
    )
    swarmui_repo: str = Field(
        default="https://github.com/mcmonkeyprojects/SwarmUI", validation_alias=_env("swarmui_repo")
    )
    swarmui_ref: str = Field(default="0.9.7-Beta", validation_alias=_env("swarmui_ref"))
    swarmui_build: str = Field(
        default="dotnet build src/SwarmUI.csproj --configuration Release -o ./src/bin/live_release",
        validation_alias=_env("swarmui_build"),
        description="SwarmUI's build step, run in its checkout after each install or upgrade.",
    )
    swarmui_launch: str = Field(
        default="./launch-linux.sh --launch_mode none --host {host} --port {port}",
        validation_alias=_env("swarmui_launch"),
    )
    swarmui_port: int = Field(default=7801, validation_alias=_env("swarmui_port"))
    swarmui_ready_timeout: float = Field(
        default=600.0, validation_alias=_env("swarmui_ready_timeout")
    )

    # --- logging -----------------------------------------------------------------------
    log_level: str = Field(default="INFO", validation_alias=_env("log_level"))
    log_json: bool = Field(default=False, validation_alias=_env("log_json"))

    _lists = field_validator(
        "backends",
        "api_keys",
        "model_roots",
        "volume_bases",
        "custom_nodes",
        "provision_extra_index_urls",
        "provision_find_links",
        mode="before",
    )(split_list)

    def __init__(self, **values: Any) -> None:
        """As pydantic-settings reads it, but a bad value raises `SettingsError`: one line
        naming the variable, the value and the expected form (not a validation traceback)."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe_errors(exc), errors=_summaries(exc)) from None
        except SourceError as exc:  # a source failed before validation
            raise SettingsError(str(exc)) from None


def variable(key: str) -> str:
    """The environment variable for a field name or alias (an alias is already one)."""
    field = Settings.model_fields.get(key)
    if field is None:
        return key
    return f"COMFYFLEET_{key.upper()}"


def _summaries(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"variable": variable(str(e["loc"][0])) if e["loc"] else None, "message": e["msg"]}
        for e in exc.errors(include_url=False)
    ]


def describe_errors(exc: ValidationError) -> str:
    """``COMFYFLEET_PORT='abc': Input should be ... (expected a whole number)``; one clause
    per error, joined on one line."""
    by_alias = {
        str(alias): name
        for name, info in Settings.model_fields.items()
        if isinstance(info.validation_alias, AliasChoices)
        for alias in info.validation_alias.choices
    }
    parts = []
    for error in exc.errors(include_url=False):
        key = str(error["loc"][0]) if error["loc"] else ""
        name = by_alias.get(key, key)
        info = Settings.model_fields.get(name)
        form = expected_form(info.annotation) if info is not None else "a valid value"
        shown = error.get("input")
        value = f"={shown!r}" if isinstance(shown, str | int | float) else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        where = variable(key) + "".join(f"[{part}]" for part in error["loc"][1:])
        parts.append(f"{where}{value}: {message} (expected {form})")
    return "invalid setting: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()

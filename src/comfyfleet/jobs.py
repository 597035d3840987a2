"""The public data model every face shares: a job goes in as a `JobSpec`, comes out as a
`JobResult` made of `Artifact`s, and reports `Progress` on the way."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ArtifactKind = Literal["image", "video", "audio", "file", "text"]
JobStatus = Literal["succeeded", "failed", "interrupted", "timeout"]


def new_id() -> str:
    return uuid.uuid4().hex


class InputImage(BaseModel):
    """One input image: base64, a data URI, or an http(s) URL in ``image``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        description="File name the workflow refers to (a LoadImage value); derived when absent.",
    )
    image: str = Field(description="base64, data:image/...;base64,..., or http(s) URL")
    node_id: str | None = Field(
        default=None, description="LoadImage node to feed; default is numeric node-id order."
    )


class ModelFile(BaseModel):
    """A model file the job needs, fetched into ComfyUI's ``folder`` before the prompt runs."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http(s) URL of the file")
    folder: str = Field(description="model folder, e.g. 'loras' or 'checkpoints'")
    filename: str | None = Field(default=None, description="name on disk; default from the URL")
    sha256: str | None = Field(default=None, description="64 hex; verified after download")
    size: int | None = Field(default=None, gt=0, description="bytes, when known")


class OutputOptions(BaseModel):
    """How artifacts come back."""

    model_config = ConfigDict(extra="forbid")

    include_temp: bool = Field(default=False, description="Also return temp previews.")
    include_data: bool = Field(
        default=True, description="Deliver artifact bytes through the sink (else names only)."
    )


class JobSpec(BaseModel):
    """What to run: a workflow (or a saved template) plus what to put into it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    workflow: dict[str, Any] | None = Field(
        default=None, description="API-format graph {node_id: {class_type, inputs}}"
    )
    template: str | None = Field(default=None, description="Name of a saved workflow template.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Values for the template's {{ NAME }} placeholders."
    )
    prompt: str | None = Field(default=None, description="Positive prompt to inject.")
    negative: str | None = Field(default=None, description="Negative prompt to inject.")
    images: list[InputImage] = Field(default_factory=list)
    seed: int | Literal["random"] | None = Field(
        default=None, description="Set every seed/noise_seed input; 'random' draws one per node."
    )
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    length: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0, description="Seconds until interrupted.")
    outputs: OutputOptions = Field(default_factory=OutputOptions)
    extra_data: dict[str, Any] = Field(
        default_factory=dict, description="Passed to ComfyUI's POST /prompt extra_data."
    )
    debug: bool = Field(default=False, description="Keep inputs and outputs after the job.")
    models: list[ModelFile] = Field(
        default_factory=list, description="Model files to fetch (cached) before running."
    )

    @model_validator(mode="after")
    def _one_source(self) -> JobSpec:
        if (self.workflow is None) == (self.template is None):
            raise ValueError("give exactly one of 'workflow' or 'template'")
        return self


class Artifact(BaseModel):
    """One output of a job, as ComfyUI saved it, plus where its bytes went."""

    node_id: str
    filename: str
    subfolder: str = ""
    type: str = "output"
    kind: ArtifactKind = "image"
    media_type: str = "application/octet-stream"
    size: int | None = None
    data: str | None = Field(default=None, description="base64 bytes (inline sink)")
    url: str | None = Field(default=None, description="where the bytes are (S3/gateway sink)")
    path: str | None = Field(default=None, description="local path (local sink)")
    text: str | None = Field(default=None, description="text outputs")


class Progress(BaseModel):
    """A progress report: a stage of the pipeline, or a node's step as ComfyUI reports it."""

    job_id: str
    stage: str = "running"
    prompt_id: str | None = None
    node: str | None = None
    class_type: str | None = None
    value: float | None = None
    max: float | None = None
    percent: float | None = None
    message: str | None = None


class JobResult(BaseModel):
    """What a job produced, how long each stage took, or why it failed."""

    job_id: str
    prompt_id: str | None = None
    status: JobStatus = "succeeded"
    artifacts: list[Artifact] = Field(default_factory=list)
    timings: dict[str, float] = Field(
        default_factory=dict, description="seconds per stage: prepare, upload, queue, run, ..."
    )
    seeds: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="seeds the graph ran with: {node_id: {input: value}}"
    )
    error: dict[str, Any] | None = None

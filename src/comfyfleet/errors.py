"""One error hierarchy for every face of comfyfleet.

Each error knows its machine-readable ``code``, the HTTP ``status`` a service answers with,
whether a queue may ``retryable``-retry it on another backend, and structured ``details``
(node id, class type, input name, ...). A class's docstring is its default message.

    ComfyFleetError
    ├── InvalidRequest                400  malformed request body or field
    │   ├── PayloadTooLarge           413  oversized body, image or download
    │   ├── ForbiddenURL              400  URL scheme/host not allowed (SSRF guard)
    │   ├── InputImageError           400  undecodable or unreadable input image
    │   ├── WorkflowFormatError       400  not an API-format graph (e.g. UI export)
    │   ├── TemplateNotFound          404  no template of that name
    │   ├── TemplateParameterMissing  400  a {{ NAME }} without a value
    │   └── WorkflowValidationError   422  graph does not match object_info (node errors)
    ├── NotFound                      404  unknown task, artifact, ...
    ├── Conflict                      409  state does not allow the operation
    ├── AuthError                     401  missing or wrong token
    │   └── Forbidden                 403  token lacks the role
    ├── ResourceExhausted             503  memory/disk below threshold before a job
    ├── ServiceUnavailable            503  a gateway or RunPod endpoint is unreachable (retryable)
    ├── ComfyError                    502  ComfyUI misbehaved
    │   ├── ComfyUnavailable          503  ComfyUI cannot be reached (retryable)
    │   │   └── ComfyCrashed          503  ComfyUI's process died during the job (retryable)
    │   ├── ComfyConnectionLost       502  connection lost beyond recovery (retryable)
    │   ├── ComfyRejected             422  ComfyUI's own 400 on POST /prompt
    │   ├── NodeExecutionError        500  a node raised while running (not retryable)
    │   ├── JobInterrupted            409  the prompt was interrupted (cancel)
    │   └── JobTimeout                504  deadline passed; our prompt was interrupted
    ├── StorageError                  500  artifact sink failed (retryable)
    ├── ModelError                    500  a model file could not be provided
    │   ├── ManifestError             400  model manifest / MODELS list is malformed
    │   ├── ModelDownloadError        502  download failed (retryable)
    │   └── ChecksumMismatch          502  downloaded bytes do not match sha256/size
    ├── QueueError                    500  queue engine failure
    ├── ProvisionError                500  installing ComfyUI/SwarmUI onto the volume failed
    └── SettingsError                 500  an environment variable or setting is invalid
"""

from __future__ import annotations

from typing import Any, ClassVar


class ComfyFleetError(Exception):
    """Something went wrong in comfyfleet."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = {k: v for k, v in details.items() if v is not None}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body every face returns for this error."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(ComfyFleetError):
    """The request is malformed."""

    code = "invalid_request"
    status = 400


class PayloadTooLarge(InvalidRequest):
    """The payload is larger than allowed."""

    code = "payload_too_large"
    status = 413


class ForbiddenURL(InvalidRequest):
    """That URL may not be fetched."""

    code = "forbidden_url"


class InputImageError(InvalidRequest):
    """An input image could not be read."""

    code = "invalid_image"


class WorkflowFormatError(InvalidRequest):
    """The workflow is not an API-format graph."""

    code = "invalid_workflow_format"


class TemplateNotFound(InvalidRequest):
    """No template of that name exists."""

    code = "template_not_found"
    status = 404


class TemplateParameterMissing(InvalidRequest):
    """A template placeholder has no value."""

    code = "template_parameter_missing"


class WorkflowValidationError(InvalidRequest):
    """The workflow does not validate against ComfyUI's node definitions.

    ``details["node_errors"]`` is a list of ``{"node_id", "class_type", "input_name", "type",
    "message"}``; the message names the first few so a log line alone is enough to act on.
    """

    code = "workflow_invalid"
    status = 422

    def __init__(self, node_errors: list[dict[str, Any]], message: str | None = None) -> None:
        if message is None:
            shown = "; ".join(_describe_node_error(e) for e in node_errors[:5])
            more = f" (+{len(node_errors) - 5} more)" if len(node_errors) > 5 else ""
            message = f"workflow is invalid: {shown}{more}"
        super().__init__(message, node_errors=node_errors)
        self.node_errors = node_errors


def _describe_node_error(error: dict[str, Any]) -> str:
    where = f"node {error.get('node_id')!s}"
    if error.get("class_type"):
        where += f" ({error['class_type']})"
    if error.get("input_name"):
        where += f" input '{error['input_name']}'"
    return f"{where}: {error.get('message', 'invalid')}"


class NotFound(ComfyFleetError):
    """Not found."""

    code = "not_found"
    status = 404


class Conflict(ComfyFleetError):
    """The operation conflicts with the current state."""

    code = "conflict"
    status = 409


class AuthError(ComfyFleetError):
    """Missing or invalid bearer token."""

    code = "unauthorized"
    status = 401


class Forbidden(AuthError):
    """This token may not do that."""

    code = "forbidden"
    status = 403


class ResourceExhausted(ComfyFleetError):
    """Not enough free memory or disk to run the job safely."""

    code = "resource_exhausted"
    status = 503
    retryable = True


class ServiceUnavailable(ComfyFleetError):
    """A comfyfleet service (gateway, RunPod endpoint, worker API) cannot be reached."""

    code = "service_unavailable"
    status = 503
    retryable = True


class ComfyError(ComfyFleetError):
    """ComfyUI answered in an unexpected way."""

    code = "comfy_error"
    status = 502


class ComfyUnavailable(ComfyError):
    """ComfyUI is unavailable."""

    code = "comfy_unavailable"
    status = 503
    retryable = True


class ComfyCrashed(ComfyUnavailable):
    """ComfyUI's process exited while the job was running; it is being restarted."""

    code = "comfy_crashed"


class ComfyConnectionLost(ComfyError):
    """Lost the connection to ComfyUI and could not recover it."""

    code = "comfy_connection_lost"
    retryable = True


class ComfyRejected(ComfyError):
    """ComfyUI rejected the prompt."""

    code = "comfy_rejected"
    status = 422


class NodeExecutionError(ComfyError):
    """A node failed while running."""

    code = "node_execution_error"
    status = 500


class JobInterrupted(ComfyError):
    """The job was interrupted."""

    code = "interrupted"
    status = 409


class JobTimeout(ComfyError):
    """The job ran past its deadline and was interrupted."""

    code = "timeout"
    status = 504


class StorageError(ComfyFleetError):
    """Storing or reading an artifact failed."""

    code = "storage_error"
    status = 500
    retryable = True


class ModelError(ComfyFleetError):
    """A model file could not be provided."""

    code = "model_error"
    status = 500


class ManifestError(ModelError):
    """The model manifest is malformed.

    ``details`` name the ``source`` (file or MODELS), the entry ``index`` and the ``field``.
    """

    code = "invalid_manifest"
    status = 400


class ModelDownloadError(ModelError):
    """A model download failed."""

    code = "model_download_failed"
    status = 502
    retryable = True


class ChecksumMismatch(ModelError):
    """A downloaded model does not match its expected sha256 or size; it was deleted."""

    code = "checksum_mismatch"
    status = 502


class QueueError(ComfyFleetError):
    """The job queue failed."""

    code = "queue_error"
    status = 500


class ProvisionError(ComfyFleetError):
    """Installing ComfyUI (or SwarmUI) onto the volume failed.

    ``details`` name the ``step`` and keep the ``tail`` of its output; a re-run resumes at it.
    """

    code = "provision_failed"
    status = 500


class SettingsError(ComfyFleetError, ValueError):
    """A setting (environment variable or config value) is invalid.

    The message is one line naming each variable, the value and the form it expects; it is
    also a ValueError, so callers that treat a bad setting as a bad value keep working.
    """

    code = "invalid_setting"
    status = 500

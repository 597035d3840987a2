"""comfyfleet: run ComfyUI workflows in production.

One pipeline (`comfyfleet.execute.execute`) serves every face: the RunPod worker, the gateway's
agents and the CLI. The public data model lives in `comfyfleet.jobs`.
"""

from comfyfleet.errors import ComfyFleetError
from comfyfleet.jobs import Artifact, JobResult, JobSpec, Progress

__version__ = "0.1.0"
__all__ = ["Artifact", "ComfyFleetError", "JobResult", "JobSpec", "Progress", "__version__"]

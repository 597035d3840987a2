"""Collecting a job's artifacts and delivering them through a sink."""

from comfyfleet.outputs.sink import Sink

__all__ = ["Sink"]

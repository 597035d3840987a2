"""comfyfleet around ComfyUI's process: health checks and warm-up."""

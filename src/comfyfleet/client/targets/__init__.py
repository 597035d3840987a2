"""One module per target: gateway, RunPod endpoint (and the worker's local API), bare ComfyUI."""

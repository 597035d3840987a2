"""The RunPod serverless worker: a thin adapter from RunPod jobs to `comfyfleet.execute`.

`commands` registers ``comfyfleet worker``; `handler.Worker.handle` is the function given to
``runpod.serverless.start``.
"""

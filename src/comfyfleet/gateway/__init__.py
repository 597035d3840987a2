"""The gateway: a FastAPI service in front of the durable queue and the fleet.

Import `comfyfleet.gateway.app.create_app` to build it; this package imports nothing heavy so
the CLI stays fast.
"""

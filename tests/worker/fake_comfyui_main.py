"""A stand-in for ComfyUI's main.py: runs the comfyfleet test server with ComfyUI's flags."""

import argparse
import os
import sys

from comfyfleet.testing.__main__ import main

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--listen", default="127.0.0.1")
parser.add_argument("--extra-model-paths-config", default=None)
args, _unknown = parser.parse_known_args()
if os.environ.get("FAKE_COMFY_EXIT"):
    print("fake ComfyUI: cannot start (CUDA error: no device)", flush=True)
    sys.exit(int(os.environ["FAKE_COMFY_EXIT"]))
root = os.path.dirname(os.path.abspath(__file__))
sys.exit(main(["--port", str(args.port), "--host", args.listen, "--root", root]))

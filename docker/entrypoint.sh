#!/bin/sh
# Container start: wire the network volume's models into ComfyUI, fetch declared models,
# then run `comfyfleet <CMD>` (default CMD: worker). Takes seconds: only directories are
# checked, and files already on the volume or in the host cache are never copied.
#   COMFYFLEET_SYMLINK_MODELS=1  also symlink volume folders into ComfyUI's models/ dir
#                                (for custom nodes that ignore extra_model_paths.yaml)
#   COMFYFLEET_MANIFEST=FILE     model manifest to sync at start (MODELS=... works too)
#   COMFYFLEET_PROVISION=auto    install ComfyUI (+ venv, custom nodes, SwarmUI) onto the volume
#                                when it lacks them, then run from there (warm: no network)
set -eu
comfy_dir="${COMFYUI_DIR:-/opt/comfyui}"

if [ "${COMFYFLEET_PROVISION:-off}" = "auto" ]; then
    exports="$(comfyfleet provision --export)"
    eval "$exports"
    comfy_dir="$COMFYUI_DIR"
fi

if [ "${COMFYFLEET_SYMLINK_MODELS:-0}" = "1" ]; then
    comfyfleet paths --write "$comfy_dir/extra_model_paths.yaml" --symlink "$comfy_dir/models" \
        || echo "entrypoint: no model volume found; using the image's models dir" >&2
else
    comfyfleet paths --write "$comfy_dir/extra_model_paths.yaml" \
        || echo "entrypoint: no model volume found; using the image's models dir" >&2
fi

if [ -n "${COMFYFLEET_MANIFEST:-}" ]; then
    comfyfleet models sync --manifest "$COMFYFLEET_MANIFEST"
elif [ -n "${MODELS:-}" ]; then
    comfyfleet models sync
fi

exec comfyfleet "$@"

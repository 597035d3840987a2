# docker buildx bake -f docker/docker-bake.hcl            # minimal + standard, every CUDA
# docker buildx bake -f docker/docker-bake.hcl standard-cuda128
# docker buildx bake -f docker/docker-bake.hcl all        # + dev images
# Context is the repository root (the Dockerfile copies src/ and pyproject.toml).

variable "REGISTRY" {
  default = "ghcr.io/comfyfleet/comfyfleet"
}

variable "TAG" {
  default = "latest"
}

variable "COMFYUI_VERSION" {
  default = "v0.8.0"
}

target "_common" {
  context    = "."
  dockerfile = "docker/Dockerfile"
  platforms  = ["linux/amd64"]
  args = {
    COMFYUI_VERSION = COMFYUI_VERSION
  }
}

# One image per variant x CUDA line. `cuda` is the NVIDIA base image's CUDA version; `torch`
# the PyTorch wheel index built for that CUDA line.
target "image" {
  inherits = ["_common"]
  matrix = {
    variant = ["minimal", "standard", "dev"]
    cuda = [
      { short = "12.4", version = "12.4.1", torch = "cu124" },
      { short = "12.6", version = "12.6.3", torch = "cu126" },
      { short = "12.8", version = "12.8.1", torch = "cu128" },
    ]
  }
  name   = "${variant}-cuda${replace(cuda.short, ".", "")}"
  target = variant == "dev" ? "dev" : "runtime"
  args = {
    VARIANT      = variant == "dev" ? "standard" : variant
    CUDA_VERSION = cuda.version
    TORCH_INDEX  = cuda.torch
  }
  tags = ["${REGISTRY}:${TAG}-${variant}-cuda${cuda.short}"]
}

group "default" {
  targets = ["minimal", "standard"]
}

group "all" {
  targets = ["minimal", "standard", "dev"]
}

group "minimal" {
  targets = ["minimal-cuda124", "minimal-cuda126", "minimal-cuda128"]
}

group "standard" {
  targets = ["standard-cuda124", "standard-cuda126", "standard-cuda128"]
}

group "dev" {
  targets = ["dev-cuda124", "dev-cuda126", "dev-cuda128"]
}

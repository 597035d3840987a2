"""deploy/kubernetes renders (the kustomize features it uses: namespace, labels, images) and
every resource validates against the Kubernetes schemas shipped in kubernetes-validate (offline,
strict: unknown fields fail). KEDA's CRDs are not in those schemas, so the ScaledObject and its
TriggerAuthentication are checked for what KEDA requires and against this project: the target
Deployment, the gateway Service URL, and a value location that /api/v1/metrics really has."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from comfyfleet.config import Settings
from comfyfleet.gateway.schemas import MetricsOut

ROOT = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
KUBERNETES = "1.30"
KNOWN = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}


def render(root: Path = ROOT) -> list[dict[str, Any]]:
    """What ``kubectl apply -k`` applies, for the features kustomization.yaml uses (anything
    else in it fails here rather than being ignored)."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN
    assert not unknown, f"kustomization uses features this render does not: {unknown}"
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every manifest is listed in kustomization.yaml, and only those"
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    labels = {k: v for entry in kustomization.get("labels", []) for k, v in entry["pairs"].items()}
    out = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((root / name).read_text()):
            doc = copy.deepcopy(doc)
            meta = doc.setdefault("metadata", {})
            if doc["kind"] != "Namespace" and kustomization.get("namespace"):
                meta["namespace"] = kustomization["namespace"]
            meta.setdefault("labels", {}).update(labels)
            for container in _containers(doc):
                container["image"] = images.get(container["image"], container["image"])
            out.append(doc)
    return out


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


DOCS = render()


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if not d["apiVersion"].startswith("keda.sh/")],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_resources_validate_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_render_holds_the_pieces_and_they_fit_together() -> None:
    deployments = by_kind(DOCS, "Deployment")
    assert set(deployments) == {"comfyfleet-gateway", "comfyfleet-worker"}
    service = by_kind(DOCS, "Service")["comfyfleet-gateway"]
    gateway = deployments["comfyfleet-gateway"]
    assert (
        service["spec"]["selector"].items()
        <= gateway["spec"]["template"]["metadata"]["labels"].items()
    )
    for deployment in deployments.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        for container in _containers(deployment):
            assert container["image"] == "ghcr.io/comfyfleet/comfyfleet:latest-standard-cuda128"
            for env in container.get("env", []):  # every COMFYFLEET_* is a real setting
                if env["name"].startswith("COMFYFLEET_"):
                    field = env["name"].removeprefix("COMFYFLEET_").lower()
                    assert field in Settings.model_fields, env["name"]
    worker = {c["name"]: c for c in _containers(deployments["comfyfleet-worker"])}
    assert worker["comfyui"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    agent = worker["agent"]["args"]
    assert agent[0] == "agent"
    assert agent[agent.index("--gateway") + 1] == f"http://{service['metadata']['name']}"
    assert deployments["comfyfleet-worker"]["spec"]["replicas"] == 0  # KEDA scales from zero


def test_keda_scales_the_workers_on_the_gateways_queue() -> None:
    [scaled] = by_kind(DOCS, "ScaledObject").values()
    auths = by_kind(DOCS, "TriggerAuthentication")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in by_kind(DOCS, "Deployment")
    assert spec["scaleTargetRef"]["name"] == "comfyfleet-worker"
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "metrics-api"
    meta = trigger["metadata"]
    assert {"url", "valueLocation", "targetValue"} <= set(meta)
    url = urlsplit(meta["url"])
    service = by_kind(DOCS, "Service")["comfyfleet-gateway"]
    assert url.hostname == f"comfyfleet-gateway.{service['metadata']['namespace']}.svc"
    assert url.path == "/api/v1/metrics" and (url.port or 80) == service["spec"]["ports"][0]["port"]
    # The value location exists in what /api/v1/metrics answers.
    schema = MetricsOut.model_json_schema()
    node: dict[str, Any] = schema
    for part in meta["valueLocation"].split("."):
        ref = node.get("$ref") or (node.get("allOf") or [{}])[0].get("$ref")
        if ref:
            node = schema["$defs"][ref.rsplit("/", 1)[1]]
        node = node["properties"][part]
    assert node["type"] == "integer"
    auth = auths[trigger["authenticationRef"]["name"]]
    assert meta["authMode"] == "bearer"
    assert [t["parameter"] for t in auth["spec"]["secretTargetRef"]] == ["token"]

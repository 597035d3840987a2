"""``GET /api/jobs`` and ``GET /api/jobs/{id}``: ComfyUI 0.8.0's job view over queue + history."""

from __future__ import annotations

from typing import Any

STATUSES = ["pending", "in_progress", "completed", "failed"]
_PREVIEWABLE = frozenset({"images", "video", "audio"})
_THREE_D = (".obj", ".fbx", ".gltf", ".glb")


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _meta(extra_data: dict[str, Any]) -> tuple[Any, Any]:
    pnginfo = extra_data.get("extra_pnginfo", {}) or {}
    workflow = pnginfo.get("workflow", {}) if isinstance(pnginfo, dict) else {}
    return extra_data.get("create_time"), (workflow or {}).get("id") if isinstance(
        workflow, dict
    ) else None


def _previewable(media_type: str, item: dict[str, Any]) -> bool:
    if media_type in _PREVIEWABLE:
        return True
    fmt = item.get("format", "")
    if fmt and (fmt.startswith("video/") or fmt.startswith("audio/")):
        return True
    return item.get("filename", "").lower().endswith(_THREE_D)


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    count = 0
    preview = fallback = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if preview is None and _previewable(media_type, item):
                    enriched = {**item, "nodeId": node_id, "mediaType": media_type}
                    if item.get("type") == "output":
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, preview or fallback


def queue_job(item: tuple[Any, ...] | list[Any], status: str) -> dict[str, Any]:
    priority, prompt_id, _, extra_data, _ = item[:5]
    create_time, workflow_id = _meta(extra_data)
    return _prune(
        {
            "id": prompt_id,
            "status": status,
            "priority": priority,
            "create_time": create_time,
            "outputs_count": 0,
            "workflow_id": workflow_id,
        }
    )


def history_job(prompt_id: str, entry: dict[str, Any], include_outputs: bool = False):
    priority, _, prompt, extra_data, _ = entry["prompt"][:5]
    create_time, workflow_id = _meta(extra_data)
    status_info = entry.get("status") or {}
    status = "failed" if status_info.get("status_str") == "error" else "completed"
    outputs = entry.get("outputs", {})
    count, preview = outputs_summary(outputs)
    error = start = end = None
    for message in status_info.get("messages", []):
        if isinstance(message, (list, tuple)) and len(message) >= 2:
            name, data = message[0], message[1]
            if isinstance(data, dict):
                if name == "execution_start":
                    start = data.get("timestamp")
                elif name in ("execution_success", "execution_error", "execution_interrupted"):
                    end = data.get("timestamp")
                    if name == "execution_error":
                        error = data
    job = _prune(
        {
            "id": prompt_id,
            "status": status,
            "priority": priority,
            "create_time": create_time,
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": count,
            "preview_output": preview,
            "workflow_id": workflow_id,
        }
    )
    if include_outputs:
        job["outputs"] = outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def get_job(prompt_id: str, running, queued, history) -> dict[str, Any] | None:
    if prompt_id in history:
        return history_job(prompt_id, history[prompt_id], include_outputs=True)
    for item in running:
        if item[1] == prompt_id:
            return queue_job(item, "in_progress")
    for item in queued:
        if item[1] == prompt_id:
            return queue_job(item, "pending")
    return None


def all_jobs(
    running, queued, history, *, statuses, workflow_id, sort_by, sort_order, limit, offset
):
    jobs: list[dict[str, Any]] = []
    if "in_progress" in statuses:
        jobs += [queue_job(i, "in_progress") for i in running]
    if "pending" in statuses:
        jobs += [queue_job(i, "pending") for i in queued]
    want_done, want_failed = "completed" in statuses, "failed" in statuses
    if want_done or want_failed:
        for pid, entry in history.items():
            failed = (entry.get("status") or {}).get("status_str") == "error"
            if (failed and want_failed) or (not failed and want_done):
                jobs.append(history_job(pid, entry))
    if workflow_id:
        jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]
    if sort_by == "execution_duration":

        def key(job):
            s, e = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
            return e - s if e and s else 0
    else:

        def key(job):
            return job.get("create_time", 0)

    jobs = sorted(jobs, key=key, reverse=sort_order == "desc")
    total = len(jobs)
    if offset > 0:
        jobs = jobs[offset:]
    if limit is not None:
        jobs = jobs[:limit]
    return jobs, total

"""``/``: the dashboard, a static page that reads the same API as any client."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
INDEX = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(INDEX, media_type="text/html", headers={"Cache-Control": "no-cache"})

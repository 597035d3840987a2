"""How a list is written in one environment variable, shared by `config.Settings` and the
worker's early launch settings (which must not import pydantic): a JSON list
(``["a","b"]``) or the form people write first, comma-separated (``a,b``)."""

from __future__ import annotations

import json
from typing import Any

LIST_FORM = 'a comma-separated list (a,b) or a JSON list (["a","b"])'


def split_list(value: Any) -> Any:
    """A list from an environment variable's text; blank means empty. A non-string passes
    through unchanged (pydantic validates it). ValueError for text that starts like JSON but
    is not."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError("starts with '[' but is not a JSON list") from None
    return [part.strip() for part in text.split(",") if part.strip()]

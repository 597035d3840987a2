"""Saved workflow templates: ``NAME.json`` files in one directory with ``{{ NAME }}`` holes.

Placeholders are ``{{ NAME }}`` (spaces optional) or ``{{ NAME | default }}``; a default is read as
JSON when it parses (``512``, ``true``, ``"x"``) and as text otherwise. Where a placeholder sits
decides what it becomes:

* a whole JSON string (``"width": "{{ WIDTH }}"``): the parameter's own value and type, so an int
  stays an int and a dict stays a dict;
* inside a longer string (``"a photo of {{ SUBJECT }}"``): its text, correctly JSON-escaped;
* bare, outside any string (``"width": {{ WIDTH }}``): the value as a JSON literal.

Template names are plain file stems (letters, digits, ``.``, ``_``, ``-``), never paths, so a
name cannot reach outside the directory (symlinks the operator puts there are followed).
Only `load_template` and `list_templates` touch files.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfyfleet.errors import TemplateNotFound, TemplateParameterMissing, WorkflowFormatError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HOLE = r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*(.*?)\s*)?\}\}"
PLACEHOLDER = re.compile(_HOLE, re.DOTALL)
# A JSON string literal, or a placeholder outside one: lets bare placeholders be found safely.
_STRING_OR_HOLE = re.compile(r'("(?:[^"\\]|\\.)*")|' + _HOLE, re.DOTALL)
_MISSING = object()


def list_templates(templates_dir: Path | None) -> list[str]:
    """Names of the templates in ``templates_dir`` (sorted; empty when there is none)."""
    if templates_dir is None or not templates_dir.is_dir():
        return []
    return sorted(
        p.stem for p in templates_dir.glob("*.json") if p.is_file() and _NAME.fullmatch(p.stem)
    )


def load_template(templates_dir: Path | None, name: str) -> str:
    """The text of template ``name`` (``name`` or ``name.json``), or `TemplateNotFound`."""
    stem = name[:-5] if name.endswith(".json") else name
    available = list_templates(templates_dir)
    listing = ", ".join(available) if available else "none"
    if not _NAME.fullmatch(stem) or ".." in stem:
        raise TemplateNotFound(
            f"invalid template name {name!r}: use letters, digits, '.', '_' and '-' only "
            f"(available: {listing})",
            template=name,
            available=available,
        )
    if templates_dir is None:
        raise TemplateNotFound(
            f"no template named {name!r}: no templates directory is configured "
            "(COMFYFLEET_TEMPLATES_DIR)",
            template=name,
            available=[],
        )
    path = templates_dir / f"{stem}.json"
    if stem not in available:
        raise TemplateNotFound(
            f"no template named {name!r} (available: {listing})",
            template=name,
            available=available,
        )
    return path.read_text(encoding="utf-8")


def placeholders(text: str) -> set[str]:
    """The names of every placeholder in a template's text."""
    return {m.group(1) for m in PLACEHOLDER.finditer(text)}


def render_template(text: str, params: Mapping[str, Any], *, name: str = "template") -> Any:
    """Fill every placeholder from ``params`` and return the decoded JSON.

    Raises `TemplateParameterMissing` naming every placeholder without a value or default, and
    `WorkflowFormatError` when the result is not JSON.
    """
    missing: set[str] = set()

    def lookup(match: re.Match[str], hole: int = 0) -> Any:
        key, default = match.group(1 + hole), match.group(2 + hole)
        if key in params:
            return params[key]
        if default is not None:
            return _parse_default(default)
        missing.add(key)
        return _MISSING

    def bare(match: re.Match[str]) -> str:
        if match.group(1) is not None:  # a string literal: handled after decoding
            return match.group(1)
        value = lookup(match, hole=1)
        return "null" if value is _MISSING else json.dumps(value)

    filled = _STRING_OR_HOLE.sub(bare, text)
    try:
        data = json.loads(filled)
    except json.JSONDecodeError as exc:
        if missing:
            raise _missing(name, missing) from None
        raise WorkflowFormatError(
            f"template {name!r} is not valid JSON after filling its placeholders: {exc.msg} "
            f"at line {exc.lineno} column {exc.colno}",
            template=name,
        ) from None
    data = _fill(data, lookup)
    if missing:
        raise _missing(name, missing)
    return data


def _fill(value: Any, lookup: Any) -> Any:
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            found = lookup(whole)
            return None if found is _MISSING else copy.deepcopy(found)
        return PLACEHOLDER.sub(lambda m: _as_text(lookup(m)), value)
    if isinstance(value, dict):
        return {k: _fill(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, lookup) for v in value]
    return value


def _as_text(value: Any) -> str:
    if value is _MISSING:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _parse_default(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _missing(name: str, missing: set[str]) -> TemplateParameterMissing:
    names = sorted(missing)
    return TemplateParameterMissing(
        f"template {name!r} needs a value for {', '.join(names)}", template=name, missing=names
    )

"""A ```console block as steps (command, expected output) and the placeholder matcher.

Pure functions, no processes: the session (``session.py``) runs the steps. The syntax is the
one described in docs/testing.md, "Doc examples are executed".
"""

from __future__ import annotations

import difflib
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache

PROMPT = "$ "
ANY_LINES = "..."

# Placeholders for what changes from run to run; each matches within one line.
TOKENS: dict[str, str] = {
    "<ID>": r"[0-9a-f]{8,}(?:-[0-9a-f]{4,})*",  # hex ids, UUIDs
    "<N>": r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?",  # integers, floats, 8e-06
    "<PORT>": r"\d{1,5}",
    "<TIME>": r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?",
    "<PATH>": r"[^\s'\"]+",
}
_PIECES = re.compile("|".join(re.escape(t) for t in [*TOKENS, "..."]))


class TranscriptError(ValueError):
    """The block itself is malformed (not a failure of the program it documents)."""


@dataclass(frozen=True)
class Step:
    """One ``$ command`` with the lines shown after it; ``line`` is 1-based in the block."""

    command: str
    expected: tuple[str, ...]
    line: int

    @property
    def background(self) -> bool:
        """``cmd &``: started, waited for until its shown output appeared, stopped at the end."""
        text = self.command.rstrip()
        return text.endswith("&") and not text.endswith("&&")

    @property
    def foreground_command(self) -> str:
        return self.command.rstrip()[:-1].rstrip() if self.background else self.command


@lru_cache(maxsize=1024)
def _bash_incomplete(text: str) -> bool:
    """True when bash needs more lines to finish parsing ``text`` (open quote, ``|``, ``do``)."""
    if text.endswith("\\"):
        return True
    done = subprocess.run(["bash", "-n", "-c", text], capture_output=True, text=True)
    if done.returncode == 0:
        return False
    if "unexpected end of file" in done.stderr or "unexpected EOF" in done.stderr:
        return True
    raise TranscriptError(f"not a valid bash command: {text!r}: {done.stderr.strip()}")


def parse(source: str) -> list[Step]:
    """Split a block into steps; a command goes on while bash says it is incomplete."""
    lines = source.splitlines()
    steps: list[Step] = []
    i = 0
    if lines and not lines[0].startswith(PROMPT):
        raise TranscriptError(f"a console block starts with '{PROMPT}command', got {lines[0]!r}")
    while i < len(lines):
        start = i
        command = lines[i][len(PROMPT) :]
        i += 1
        while _bash_incomplete(command):
            if i == len(lines):
                raise TranscriptError(f"command at block line {start + 1} never ends: {command!r}")
            command += "\n" + lines[i]
            i += 1
        out_start = i
        while i < len(lines) and not lines[i].startswith(PROMPT):
            i += 1
        steps.append(Step(command, _trim(lines[out_start:i]), start + 1))
    return steps


def _trim(lines: list[str]) -> tuple[str, ...]:
    """Trailing spaces and trailing blank lines are not compared (editors strip them)."""
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return tuple(out)


def normalize_output(text: str) -> tuple[str, ...]:
    return _trim(text.splitlines())


@lru_cache(maxsize=4096)
def line_regex(expected: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for m in _PIECES.finditer(expected):
        parts.append(re.escape(expected[pos : m.start()]))
        parts.append(".*?" if m.group() == "..." else f"(?:{TOKENS[m.group()]})")
        pos = m.end()
    parts.append(re.escape(expected[pos:]))
    return re.compile("".join(parts))


def matches(expected: tuple[str, ...], actual: tuple[str, ...], *, prefix: bool = False) -> bool:
    """Glob match by lines: a line ``...`` is any lines (also none); ``prefix`` allows more."""
    pattern = [*expected, ANY_LINES] if prefix else list(expected)
    # ok[j] after row i: pattern[:i] matches actual[:j]
    ok = [True] + [False] * len(actual)
    for item in pattern:
        new = [False] * (len(actual) + 1)
        if item.strip() == ANY_LINES:
            seen = False
            for j in range(len(actual) + 1):
                seen = seen or ok[j]
                new[j] = seen
        else:
            rx = line_regex(item)
            for j in range(1, len(actual) + 1):
                new[j] = ok[j - 1] and rx.fullmatch(actual[j - 1]) is not None
        ok = new
    return ok[len(actual)]


def explain(expected: tuple[str, ...], actual: tuple[str, ...]) -> str:
    """What a reader needs to fix the doc: both texts and their diff."""
    text = "shown in the doc (placeholders allowed):\n" + _indent(expected)
    text += "\nprinted:\n" + _indent(actual)
    diff = difflib.unified_diff(list(expected), list(actual), "shown in the doc", "printed", n=2)
    lines = [line.rstrip("\n") for line in diff]
    if lines:
        text += "\ndiff (lines with placeholders differ by design):\n" + "\n".join(lines)
    return text


def _indent(lines: tuple[str, ...]) -> str:
    return "\n".join("    " + line for line in lines) if lines else "    (nothing)"

"""Sybil parsers for the docs: ```console blocks become examples run in a shell session.

Sybil lexes the Markdown (fences, line numbers, one namespace per document); what a console
example means is ours (``transcript.py``, ``session.py``). A block that cannot run here is
marked in the Markdown right before it with ``<!-- doc-test: skip REASON -->``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer, RawFencedCodeBlockLexer

from .transcript import PROMPT, parse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "docs" / "examples"
NOT_RUN = re.compile(r"<!--\s*doc-test:\s*not-run\b(?P<reason>(?:(?!-->).)*)-->\s*\Z", re.DOTALL)


def documents() -> list[Path]:
    """README.md and every docs/*.md, the files whose examples must stay true."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class ConsoleBlock:
    source: str
    not_run: str | None  # the reason it cannot run here


def run_console_block(example: Example) -> None:
    """The evaluator: every step of the block, in the document's session."""
    __tracebackhide__ = True
    block: ConsoleBlock = example.parsed
    steps = parse(block.source)  # a block that is not run must still be well-formed
    if block.not_run is not None:
        return
    session = example.namespace["session"]
    for step in steps:
        try:
            session.run(step)
        except AssertionError as exc:
            line = example.line + step.line
            raise AssertionError(
                f"{Path(example.path).name}:{line}: $ {step.command}\n{exc}"
            ) from None


class ConsoleParser:
    """```console fenced blocks, with the not-run marker that may precede them."""

    def __init__(self) -> None:
        self.lexer = FencedCodeBlockLexer("console")

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexer(document):
            marker = NOT_RUN.search(document.text[: region.start])
            reason = None
            if marker is not None:
                reason = marker["reason"].strip()
                if not reason:
                    raise ValueError(f"{document.path}: doc-test: not-run needs a reason")
            region.parsed = ConsoleBlock(str(region.lexemes["source"]), reason)
            region.evaluator = run_console_block
            yield region


def console_examples(path: Path) -> list[Example]:
    return list(Sybil([ConsoleParser()]).parse(path))


def not_run(example: Example) -> str | None:
    return example.parsed.not_run


def blocks_not_run() -> list[tuple[str, str]]:
    """``("docs/x.md:LINE", reason)`` for every block marked not-run."""
    return [
        (f"{path.relative_to(ROOT)}:{example.line}", reason)
        for path in documents()
        for example in console_examples(path)
        if (reason := not_run(example)) is not None
    ]


class _AnyFence:
    """Every fenced block with its info string, for the check that transcripts are console."""

    def __init__(self) -> None:
        self.lexer = RawFencedCodeBlockLexer(re.compile(r"(?P<info>[^\n]*)$\n", re.MULTILINE))

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexer(document):
            region.parsed = (region.lexemes["info"].strip(), str(region.lexemes["source"]))
            yield region


def unrun_transcripts(path: Path) -> list[str]:
    """Blocks that look like a terminal session (``$ cmd``) but are not ```console."""
    found = []
    for example in Sybil([_AnyFence()]).parse(path):
        info, source = example.parsed
        if info != "console" and any(line.startswith(PROMPT) for line in source.splitlines()):
            found.append(f"{path.name}:{example.line} (```{info})")
    return found

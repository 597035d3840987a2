"""Every ```console example of README.md and docs/*.md, run against the real programs.

One test per block, in document order; the blocks of one document share a session (a temp
dir seeded with docs/examples/, free ports for 8188/8090/..., background servers). Selecting
one block with ``-k`` runs the blocks before it first, as a reader would have.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Example

from .blocks import (
    EXAMPLES_DIR,
    ROOT,
    blocks_not_run,
    console_examples,
    documents,
    not_run,
    unrun_transcripts,
)
from .session import Session
from .transcript import parse

DOCS: dict[Path, list[Example]] = {path: console_examples(path) for path in documents()}
CASES = [
    pytest.param(path, i, id=f"{path.relative_to(ROOT)}:{example.line}")
    for path, examples in DOCS.items()
    for i, example in enumerate(examples)
    if not_run(example) is None
]


class Sessions:
    """One session per document, opened at its first block and closed after its last."""

    def __init__(self) -> None:
        self.open: dict[Path, Session] = {}
        self.next_block: dict[Path, int] = {}

    def run(self, path: Path, index: int) -> None:
        __tracebackhide__ = True
        examples = DOCS[path]
        if path not in self.open:
            self.open[path] = Session(EXAMPLES_DIR, Path(sys.executable).parent)
            examples[0].document.namespace["session"] = self.open[path]
            self.next_block[path] = 0
        try:
            for earlier in range(self.next_block[path], index):
                self.next_block[path] = earlier + 1
                try:
                    examples[earlier].evaluate()
                except pytest.skip.Exception:
                    pass
                except AssertionError as exc:
                    pytest.fail(f"an earlier block of this document failed:\n{exc}")
            self.next_block[path] = index + 1
            examples[index].evaluate()
        finally:
            if self.next_block[path] >= len(examples):
                self.close(path)

    def close(self, path: Path) -> None:
        session = self.open.pop(path, None)
        if session is not None:
            session.close()

    def close_all(self) -> None:
        for path in list(self.open):
            self.close(path)


@pytest.fixture(scope="module")
def sessions() -> Iterator[Sessions]:
    all_sessions = Sessions()
    yield all_sessions
    all_sessions.close_all()


@pytest.mark.parametrize(("path", "index"), CASES)
def test_console_block(sessions: Sessions, path: Path, index: int) -> None:
    __tracebackhide__ = True
    sessions.run(path, index)


def test_docs_have_console_examples() -> None:
    """The collection itself can fail: the README's examples must be found."""
    assert len(DOCS[ROOT / "README.md"]) >= 5, [e.line for e in DOCS[ROOT / "README.md"]]


def test_terminal_sessions_are_console_blocks() -> None:
    """A ``$ command`` block that is not ```console would never run: no silent ignoring."""
    found = [where for path in documents() for where in unrun_transcripts(path)]
    assert not found, f"mark these blocks ```console so they run (or rewrite them): {found}"


def test_blocks_not_run_are_listed_in_testing_md() -> None:
    """Each reason for not running a block is in docs/testing.md's list, and the block parses."""
    listed = (ROOT / "docs" / "testing.md").read_text()
    missing = [(where, reason) for where, reason in blocks_not_run() if reason not in listed]
    assert not missing, f"list these in docs/testing.md, 'Doc examples are executed': {missing}"
    for examples in DOCS.values():
        for example in examples:
            if not_run(example) is not None:
                parse(example.parsed.source)

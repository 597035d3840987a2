"""The console transcript syntax: how commands end, and what the placeholders match."""

from __future__ import annotations

import pytest

from .transcript import TranscriptError, matches, parse


def test_a_command_goes_on_while_bash_needs_more_lines() -> None:
    steps = parse('$ curl -d \'{\n  "a": 1}\'\n{"ok":true}\n$ echo a \\\n    b\na b\n$ true\n')
    assert [(s.command, s.expected, s.line) for s in steps] == [
        ("curl -d '{\n  \"a\": 1}'", ('{"ok":true}',), 1),
        ("echo a \\\n    b", ("a b",), 4),
        ("true", (), 7),
    ]


def test_background_is_a_trailing_single_ampersand() -> None:
    bg, fg = parse("$ python -m x --port 8188 &\nready\n$ a && b\n")
    assert bg.background and bg.foreground_command == "python -m x --port 8188"
    assert not fg.background


def test_malformed_blocks_are_errors_of_the_doc() -> None:
    with pytest.raises(TranscriptError, match="starts with"):
        parse("output before any command\n$ true\n")
    with pytest.raises(TranscriptError, match="never ends"):
        parse("$ echo 'unclosed\nmore\n")
    with pytest.raises(TranscriptError, match="not a valid bash command"):
        parse("$ echo )\n")


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (("a", "...", "d"), ("a", "b", "c", "d")),
        (("a", "...", "d"), ("a", "d")),
        (("root /tmp/... (x)",), ("root /tmp/abc/def (x)",)),
        (('"job_id": "<ID>",',), ('"job_id": "c4eb55f747494e8086fb1048e98e5d96",',)),
        (('"prompt_id": "<ID>"',), ('"prompt_id": "27498c99-b69a-4a6f-a6b8-38027a3f57be"',)),
        (("cleanup: <N>, run: <N>",), ("cleanup: 8e-06, run: 0.0035",)),
        (("<TIME> INFO x",), ("2026-12-04 19:07:58,224 INFO x",)),
        (('"at": "<TIME>"',), ('"at": "2026-12-04T19:08:23.526084Z"',)),
        (("port <PORT> in <PATH>",), ("port 40051 in /tmp/x/queue.db",)),
        (("a(b)[c] $x",), ("a(b)[c] $x",)),
    ],
)
def test_placeholders_match_what_changes(expected: tuple, actual: tuple) -> None:
    assert matches(expected, actual)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (("a", "b"), ("a",)),
        (("a",), ("a", "b")),
        (("...", "d"), ("a", "b")),
        (('"size": <N>',), ('"size": "big"',)),
        (("<ID>",), ("not-hex",)),
        (("exit=1",), ("exit=2",)),
        (("a...b",), ("a", "b")),
    ],
)
def test_anything_else_is_a_mismatch(expected: tuple, actual: tuple) -> None:
    assert not matches(expected, actual)


def test_prefix_mode_allows_more_lines_after() -> None:
    assert matches(("ready",), ("ready", "log", "log"), prefix=True)
    assert not matches(("ready",), ("log", "ready"), prefix=True)
    assert matches(("...", "ready"), ("log", "ready", "log"), prefix=True)


def test_markers_and_fences_in_markdown(tmp_path) -> None:
    from .blocks import console_examples, not_run, unrun_transcripts

    doc = tmp_path / "doc.md"
    doc.write_text(
        "# x\n\n```console\n$ echo a\na\n```\n\n"
        "<!-- doc-test: not-run needs an NVIDIA GPU -->\n```console\n$ nvidia-smi\n```\n\n"
        "```bash\n$ ls\n```\n\n```\nplain text\n```\n"
    )
    examples = console_examples(doc)
    assert [(e.line, not_run(e)) for e in examples] == [(3, None), (9, "needs an NVIDIA GPU")]
    assert unrun_transcripts(doc) == ["doc.md:13 (```bash)"]
    doc.write_text("<!-- doc-test: not-run -->\n```console\n$ true\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        console_examples(doc)

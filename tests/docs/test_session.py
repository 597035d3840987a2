"""The session examples run in: state carried like one terminal, free ports, cleanup."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .session import Session, StepFailed
from .transcript import parse


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    (tmp_path / "hello.txt").write_text("hello from the examples\n")
    s = Session(tmp_path, Path(sys.executable).parent)
    yield s
    s.close()


def run(session: Session, block: str) -> None:
    for step in parse(block):
        session.run(step)


def test_the_dir_is_seeded_and_exports_and_cd_carry_over(session: Session) -> None:
    run(
        session,
        "$ cat hello.txt\nhello from the examples\n"
        "$ export GREETING=hi; mkdir sub\n"
        "$ cd sub\n"
        '$ echo "$GREETING from $(basename "$PWD")"\nhi from sub\n',
    )


def test_documented_ports_become_free_ones_and_read_back_as_documented(session: Session) -> None:
    run(session, "$ echo http://127.0.0.1:8188 --port 8188\nhttp://127.0.0.1:8188 --port 8188\n")
    assert session.ports[8188] != 8188
    with pytest.raises(StepFailed):  # the command really saw another port
        run(
            session, '$ python -c "import sys; print(int(sys.argv[1]) == 8188)" --port 8188\nTrue\n'
        )


def test_a_difference_or_a_failing_command_fails_with_both_texts(session: Session) -> None:
    with pytest.raises(StepFailed, match=r"(?s)shown in the doc.*    two.*printed:.*    one"):
        run(session, "$ echo one\ntwo\n")
    with pytest.raises(StepFailed, match="exit status 3"):
        run(session, "$ exit 3\n")
    run(session, '$ (exit 3); echo "exit=$?"\nexit=3\n')


def test_a_background_command_is_waited_for_and_stopped(session: Session) -> None:
    server = "python -u -c 'import time; time.sleep(0.3); print(\"ready\"); time.sleep(600)'"
    run(session, f"$ {server} &\nready\n")
    process = session.background[0].process
    assert process.poll() is None
    session.close()
    assert process.poll() is not None


def test_a_background_command_that_exits_or_prints_else_fails(session: Session) -> None:
    with pytest.raises(StepFailed, match="exited with 0"):
        run(session, "$ echo other &\nready\n")
    with pytest.raises(StepFailed, match="what came before differs"):
        run(session, "$ printf 'noise\\nready\\n'; sleep 600 &\nready\n")


def test_a_command_that_does_not_end_is_stopped_with_its_children(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from . import session as session_module

    monkeypatch.setattr(session_module, "COMMAND_TIMEOUT", 1.0)
    with pytest.raises(StepFailed, match=r"(?s)still running after 1 s.*    started"):
        run(session, "$ (sleep 600 & echo $! > child.pid; echo started; wait)\nstarted\n")
    child = int((session.dir / "child.pid").read_text())
    try:  # gone, or dead and not yet reaped by whoever inherited it
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z")

"""The doc examples' run ends with the list of blocks it did not run, so none is forgotten."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .blocks import blocks_not_run

    listed = blocks_not_run()
    if listed:
        terminalreporter.section("doc examples not run here")
        for where, reason in listed:
            terminalreporter.write_line(f"{where}: {reason}")

"""Sections of pytest's terminal summary that fixtures fill (start times, where logs are kept).

A fixture appends lines to ``section(config, "title")``; ``tests/conftest.py``'s
``pytest_terminal_summary`` prints every non-empty section at the end of the run.
"""

from __future__ import annotations

import pytest

_SECTIONS = pytest.StashKey[dict[str, list[str]]]()


def section(config: pytest.Config, title: str) -> list[str]:
    """The lines of the summary section ``title`` (made empty on first use)."""
    if _SECTIONS not in config.stash:
        config.stash[_SECTIONS] = {}
    return config.stash[_SECTIONS].setdefault(title, [])


def write_sections(reporter: pytest.TerminalReporter) -> None:
    for title, lines in reporter.config.stash.get(_SECTIONS, {}).items():
        if lines:
            reporter.section(title)
            for line in lines:
                reporter.write_line(line)

"""docs/cli.md is generated from the code and must match it."""

from __future__ import annotations

from pathlib import Path

from terrascribe.cli import app
from terrascribe.cli.reference import markdown_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date():
    assert DOC.read_text() == markdown_reference(app), "run `make docs` to regenerate docs/cli.md"


def test_reference_documents_nested_commands_and_options():
    text = markdown_reference(app)
    assert "## `terrascribe info`" in text
    assert "`--json`" in text

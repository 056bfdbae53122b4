"""``terrascribe build osm-tags``: extend the tag table to unseen tags with the classifier."""

from __future__ import annotations

from typer.testing import CliRunner

from terrascribe.cli import app
from terrascribe.text.osm_tags import TagTable

runner = CliRunner()


def test_unseen_tags_get_predicted_rows_and_known_ones_are_left_alone(tmp_path):
    tags = tmp_path / "tags.txt"
    tags.write_text("# unseen tags\nsolar_panel=roof\nwebsite=http://x\n")
    out = tmp_path / "table.csv"
    result = runner.invoke(
        app,
        [
            "build",
            "osm-tags",
            "--tags-file",
            str(tags),
            "--tag",
            "skate_ramp=yes",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    extended = TagTable.load(out)
    base = TagTable.load()
    assert base.lookup("solar_panel", "roof") is None
    assert extended.lookup("solar_panel", "roof").source == "classifier"
    assert extended.lookup("website", "http://x") == base.lookup("website", "http://x")
    assert extended.version.endswith("+classifier")
    assert "held-out check" in result.output


def test_malformed_tag_entries_are_refused(tmp_path):
    out = tmp_path / "table.csv"
    result = runner.invoke(app, ["build", "osm-tags", "--tag", "no-equals-sign", "--out", str(out)])
    assert result.exit_code != 0
    assert "KEY=VALUE" in result.output
    assert not out.exists()

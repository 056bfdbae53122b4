"""The command line: groups are listed, ``info`` summarises a dataset, errors are clear."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from terrascribe.cli import app
from terrascribe.shards import write_dataset
from tests.test_shards import JOBS, make_items

runner = CliRunner()


def test_help_lists_every_command_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in (
        "build",
        "curate",
        "train",
        "eval",
        "search",
        "map",
        "sample-data",
        "demo",
        "info",
    ):
        assert name in result.output, name
    # The root help text itself says "build ... curate ... train ... search ... map": check the
    # registered commands too, so a group that is no longer registered fails this test.
    root = typer.main.get_command(app)
    registered = set(root.list_commands(typer.Context(root)))
    assert registered >= {
        *("build", "curate", "train", "models", "eval", "index", "search", "serve", "map"),
        *("sample-data", "demo", "info"),
    }


def test_info_prints_counts_and_json(tmp_path):
    write_dataset(tmp_path / "ds", JOBS, make_items, builder="test", seed=0, progress=False)
    result = runner.invoke(app, ["info", str(tmp_path / "ds"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["samples"] == 18
    assert summary["skip_reasons"] == {"blank tile": 2}
    assert summary["gsd_m"]["known"] == 18
    assert summary["extent"]["west"] == 10.0
    table = runner.invoke(app, ["info", str(tmp_path / "ds")])
    assert table.exit_code == 0 and "samples" in table.output and "18" in table.output


def test_info_on_a_folder_that_is_not_a_dataset(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code != 0
    assert "not a complete terrascribe dataset" in result.output


def test_search_refuses_a_malformed_point_before_opening_the_index(tmp_path):
    result = runner.invoke(app, ["search", str(tmp_path / "no-index"), "--near", "10.5"])
    assert result.exit_code == 2
    assert "expected LON,LAT" in result.output


def test_caption_stats_of_an_empty_caption_set_is_one_error_line(tmp_path):
    path = tmp_path / "dataset_rsicd.json"
    path.write_text('{"images": [], "dataset": "rsicd"}')
    result = runner.invoke(app, ["build", "caption-stats", str(path)])
    assert result.exit_code == 1
    assert "no captioned images" in result.output

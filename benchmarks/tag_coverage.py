"""How much of real OSM data the tag table covers.

Reads ``.osm.pbf`` files with pyosmium (a plain ``SimpleHandler``: no geometry, only tags) and
reports, for the tagged nodes, ways and relations:

- the share of objects with a visible main feature (the table can caption them);
- the share of tag occurrences resolved by an exact ``key=value`` row, by a key-level rule, or by
  nothing at all;
- the most frequent unresolved ``key=value`` pairs, overall and among objects that show nothing
  (the rows worth adding next).

Usage::

    python benchmarks/tag_coverage.py                      # ../shared/data/osm/*.osm.pbf
    python benchmarks/tag_coverage.py region.osm.pbf --top 40
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

import osmium
from rich.console import Console
from rich.table import Table

from terrascribe.text.osm_tags import TagTable

DEFAULT_GLOB = Path(__file__).resolve().parents[2] / "shared" / "data" / "osm"


@dataclass
class Coverage:
    """Counts gathered over one or more files."""

    objects: int = 0
    visible: int = 0
    hidden: int = 0  # carries a hide tag (tunnel=yes...)
    fully_known: int = 0  # every tag resolved by some rule
    tags: int = 0
    exact: int = 0
    key_level: int = 0
    unknown: int = 0
    unknown_pairs: Counter = field(default_factory=Counter)
    unknown_on_invisible: Counter = field(default_factory=Counter)
    main_features: Counter = field(default_factory=Counter)

    def add(self, other: Coverage) -> None:
        for f in fields(self):  # ints add, Counters update
            mine = getattr(self, f.name)
            if isinstance(mine, Counter):
                mine.update(getattr(other, f.name))
            else:
                setattr(self, f.name, mine + getattr(other, f.name))


class TagCounter(osmium.SimpleHandler):
    """Feeds the tags of every tagged object to the table."""

    def __init__(self, table: TagTable) -> None:
        super().__init__()
        self.table = table
        self.stats = Coverage()
        self._cache: dict[tuple[str, str], str] = {}

    def _resolve(self, key: str, value: str) -> str:
        pair = (key, value)
        kind = self._cache.get(pair)
        if kind is None:
            rule = self.table.lookup(key, value)
            kind = "unknown" if rule is None else "key" if rule.is_key_rule else "exact"
            self._cache[pair] = kind
        return kind

    def _object(self, obj: osmium.osm.OSMObject) -> None:
        if len(obj.tags) == 0:
            return
        tags = {t.k: t.v for t in obj.tags}
        s = self.stats
        s.objects += 1
        unknown = []
        for key, value in tags.items():
            kind = self._resolve(key, value)
            s.tags += 1
            if kind == "exact":
                s.exact += 1
            elif kind == "key":
                s.key_level += 1
            else:
                s.unknown += 1
                unknown.append(f"{key}={value}")
        s.unknown_pairs.update(unknown)
        if not unknown:
            s.fully_known += 1
        main = self.table.main_rule(tags)
        if main is not None:
            s.visible += 1
            s.main_features[main.tag] += 1
        else:
            rules = [self.table.lookup(k, v) for k, v in tags.items()]
            if any(r is not None and r.role == "hide" and r.applies(tags) for r in rules):
                s.hidden += 1
            s.unknown_on_invisible.update(unknown)

    def node(self, n: osmium.osm.Node) -> None:
        self._object(n)

    def way(self, w: osmium.osm.Way) -> None:
        self._object(w)

    def relation(self, r: osmium.osm.Relation) -> None:
        self._object(r)


def measure(path: Path, table: TagTable) -> tuple[Coverage, float]:
    """Count tag coverage in one file; returns the counts and the seconds taken."""
    handler = TagCounter(table)
    start = time.perf_counter()
    handler.apply_file(str(path))
    return handler.stats, time.perf_counter() - start


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _row(name: str, s: Coverage, seconds: str) -> list[str]:
    """One line of the summary table."""
    return [
        name,
        f"{s.objects:,}",
        _pct(s.visible, s.objects),
        _pct(s.hidden, s.objects),
        _pct(s.fully_known, s.objects),
        _pct(s.exact, s.tags),
        _pct(s.key_level, s.tags),
        _pct(s.unknown, s.tags),
        seconds,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="OSM .pbf/.osm files")
    parser.add_argument(
        "--table", type=Path, default=None, help="tag table CSV (default: packaged)"
    )
    parser.add_argument("--top", type=int, default=25, help="how many unresolved tags to list")
    args = parser.parse_args(argv)
    files = args.files or sorted(DEFAULT_GLOB.glob("*.osm.pbf"))
    if not files:
        raise SystemExit(f"no OSM files given and none found in {DEFAULT_GLOB}")
    table = TagTable.load(args.table)
    console = Console(width=160)
    summary = Table(title=f"tag table {table.version} ({len(table)} rules) on real OSM data")
    for col in (
        "file",
        "tagged objects",
        "visible main feature",
        "hidden (tunnel...)",
        "all tags resolved",
        "tags: exact row",
        "tags: key-level rule",
        "tags: unresolved",
        "seconds",
    ):
        summary.add_column(col, justify="right" if col != "file" else "left")
    total = Coverage()
    for path in files:
        stats, seconds = measure(path, table)
        total.add(stats)
        summary.add_row(*_row(path.name, stats, f"{seconds:.2f}"))
    summary.add_row(*_row("all", total, ""))
    console.print(summary)
    for title, counter in (
        ("unresolved tags (all objects)", total.unknown_pairs),
        ("unresolved tags on objects that show nothing", total.unknown_on_invisible),
        ("most frequent main features", total.main_features),
    ):
        top = Table(title=title)
        top.add_column("key=value")
        top.add_column("objects", justify="right")
        for pair, n in counter.most_common(args.top):
            top.add_row(pair, f"{n:,}")
        console.print(top)


if __name__ == "__main__":
    main()

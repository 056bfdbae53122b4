"""OSM extraction speed and peak memory vs ``osmium export`` (osmium-tool, C++) on the same files.

For each PBF: terrascribe's :func:`~terrascribe.sources.osm.extract_osm` (visible-tag filter,
metric sizes, partitioned GeoParquet) and ``osmium export -f geojsonseq`` (all tagged objects to
GeoJSON lines), each in a fresh child process so peak RSS is measured per run. Prints a table with
the ratio of our time to osmium's (target: <= 3). Timings on a shared machine are noisy: run it a
few times and read the ratios.

    python benchmarks/osm_extract.py [--data ../shared/data/osm] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
from terrascribe.sources.osm import extract_osm, visible_tag_filter, visible_feature_keys
from terrascribe.text.osm_tags import TagTable
table = TagTable.load()
t0 = time.perf_counter()
result = extract_osm(sys.argv[1], sys.argv[2], keep=visible_tag_filter(table),
                     keys=visible_feature_keys(table), progress=False)
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "objects": result.objects, "peak_mb": rss}))
"""


def _ours(pbf: Path, tmp: Path) -> dict:
    out = tmp / "extract"
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(pbf), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _osmium(pbf: Path, tmp: Path) -> dict:
    out = tmp / "export.geojsonseq"
    cmd = [
        "/usr/bin/time",
        "-f",
        "%M",
        "osmium",
        "export",
        "-O",
        "-f",
        "geojsonseq",
        "-o",
        str(out),
        str(pbf),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    with open(out, encoding="utf-8") as f:
        objects = sum(1 for _ in f)
    return {"seconds": seconds, "objects": objects, "peak_mb": peak_kb / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "osm")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs each")
    args = parser.parse_args()
    if shutil.which("osmium") is None:
        sys.exit("osmium-tool not found: apt-get install -y osmium-tool")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for pbf in sorted(args.data.glob("*.osm.pbf")):
            ours = min((_ours(pbf, tmp) for _ in range(args.repeat)), key=lambda r: r["seconds"])
            ref = min((_osmium(pbf, tmp) for _ in range(args.repeat)), key=lambda r: r["seconds"])
            rows.append((pbf.name, ours, ref))
    head = (
        f"{'file':<24}{'ours s':>8}{'obj/s':>9}{'MB':>7}"
        f"{'osmium s':>10}{'obj/s':>9}{'MB':>7}{'ratio':>7}"
    )
    print(head)
    print("-" * len(head))
    for name, ours, ref in rows:
        print(
            f"{name:<24}{ours['seconds']:>8.2f}{ours['objects'] / ours['seconds']:>9.0f}"
            f"{ours['peak_mb']:>7.0f}{ref['seconds']:>10.2f}{ref['objects'] / ref['seconds']:>9.0f}"
            f"{ref['peak_mb']:>7.0f}{ours['seconds'] / ref['seconds']:>7.2f}"
        )
    print("\nours: visible-tag objects -> partitioned GeoParquet with metric sizes (child process,")
    print("imports excluded); osmium: all tagged objects -> GeoJSON lines. ratio = time ratio.")


if __name__ == "__main__":
    main()

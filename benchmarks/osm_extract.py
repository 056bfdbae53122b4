"""OSM extraction speed and peak memory vs ``osmium export`` (osmium-tool, C++) on the same files.

For each PBF in ``--data`` (and a larger file made of ``--copies`` renumbered copies of all of them,
so that fixed costs do not dominate): terrascribe's :func:`~terrascribe.sources.osm.extract_osm`
(visible-tag filter, metric sizes, partitioned GeoParquet) against ``osmium export -f
geojsonseq`` (every tagged object, areas assembled, to GeoJSON lines).

Ours runs in one child process per file: imports, one warm-up extraction (untimed), then
``--repeat`` timed extractions into fresh folders; we report the median wall time and CPU time of
those (the library call, imports excluded) and the child's peak RSS. "cold process" is the whole
child until its first extraction ends (interpreter start, imports, table load, one extraction),
the figure to set against a one-off ``osmium export`` command. osmium runs ``--repeat`` times; we
report its median wall and CPU time and peak RSS (``/usr/bin/time``). Page cache is warm for both.

The child also times the pyosmium floor: the same file through ``FileProcessor`` with the same
locations, areas and C++ filters as ours, taking each object's tags and osmium's WKB and doing
nothing else. No extractor built on pyosmium's object API can beat it, so its ratio to osmium is
the best such an extractor can reach on this machine.
The machine is shared: read the medians and the ratios, and run it again when in doubt.

    python benchmarks/osm_extract.py [--data ../shared/data/osm] [--repeat 5] [--copies 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, shutil, sys, time
t_start = time.perf_counter()
from terrascribe.sources.osm import extract_osm, visible_feature_keys, visible_tag_filter
from terrascribe.text.osm_tags import TagTable
table = TagTable.load()
t_imported = time.perf_counter()
src, out, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])

def once(i):
    folder = f"{out}-{i}"
    shutil.rmtree(folder, ignore_errors=True)
    w, c = time.perf_counter(), time.process_time()
    result = extract_osm(src, folder, keep=visible_tag_filter(table),
                         keys=visible_feature_keys(table), progress=False)
    return time.perf_counter() - w, time.process_time() - c, result.objects

def pyosmium_floor():
    # The least any pyosmium-based extractor does: every object osmium's C++ filters pass, with
    # its tags as a dict and its geometry as osmium's WKB. No decisions, no geometry, no output.
    import tempfile
    from pathlib import Path
    import osmium
    from terrascribe.sources.osm import _file_processor, _location_index, _tags
    wkb = osmium.geom.WKBFactory()
    way_cls, area_cls = osmium.osm.Way, osmium.osm.Area
    keys = visible_feature_keys(table)  # None: a wildcard rule, no key pre-filter (as ours)
    keys = sorted(keys) if keys is not None else None
    w, c = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for obj in _file_processor(Path(src), keys, _location_index("auto", Path(src), Path(tmp))):
            cls = type(obj)
            if cls is area_cls and obj.from_way():
                continue
            _tags(obj)
            try:
                if cls is way_cls:
                    wkb.create_linestring(obj)
                elif cls is area_cls:
                    wkb.create_multipolygon(obj)
                else:
                    (obj.location.lon, obj.location.lat)  # what ours keeps of a node
            except Exception:
                pass
    return time.perf_counter() - w, time.process_time() - c

first = once(0)
cold = time.perf_counter() - t_start
runs = [once(i + 1) for i in range(repeat)]
floors = [pyosmium_floor() for _ in range(repeat)]
print(json.dumps({
    "wall": [r[0] for r in runs], "cpu": [r[1] for r in runs], "objects": first[2],
    "floor_wall": [f[0] for f in floors],
    "imports_s": t_imported - t_start, "first_s": first[0], "cold_s": cold,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def ours(pbf: Path, tmp: Path, repeat: int) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(pbf), str(tmp / "extract"), str(repeat)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


def osmium_export(pbf: Path, tmp: Path, repeat: int) -> dict:
    out = tmp / "export.geojsonseq"
    cmd = ["/usr/bin/time", "-f", "%M %U %S", "osmium", "export", "-O", "-f", "geojsonseq"]
    walls, cpus, peaks = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run([*cmd, "-o", str(out), str(pbf)], capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if done.returncode != 0:
            sys.exit(f"osmium export failed on {pbf}: {done.stderr.strip()}")
        peak_kb, user, system = done.stderr.strip().splitlines()[-1].split()
        cpus.append(float(user) + float(system))
        peaks.append(int(peak_kb) / 1024)
    with open(out, encoding="utf-8") as f:
        objects = sum(1 for _ in f)
    return {"wall": walls, "cpu": cpus, "peak_mb": max(peaks), "objects": objects}


def scaled_copy(pbfs: list[Path], copies: int, tmp: Path) -> Path:
    """All inputs, ``copies`` times, renumbered so ids never collide (osmium renumber + merge)."""
    parts = []
    for i, pbf in enumerate(pbfs):
        for k in range(copies):
            start = (i * copies + k) * 10**9 + 1
            part = tmp / f"copy-{i}-{k}.osm.pbf"
            subprocess.run(
                ["osmium", "renumber", "-O", "-s", f"{start},{start},{start}", "-o", part, pbf],
                check=True,
                capture_output=True,
            )
            parts.append(part)
    merged = tmp / f"all-x{copies}.osm.pbf"
    subprocess.run(["osmium", "merge", "-O", "-o", merged, *parts], check=True, capture_output=True)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "osm")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs each (median)")
    parser.add_argument("--copies", type=int, default=8, help="copies in the large file (0: none)")
    args = parser.parse_args()
    if shutil.which("osmium") is None:
        sys.exit("osmium-tool not found: apt-get install -y osmium-tool")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pbfs = sorted(args.data.glob("*.osm.pbf"))
        if not pbfs:
            sys.exit(f"no .osm.pbf files in {args.data}")
        inputs = list(pbfs)
        if args.copies:
            inputs.append(scaled_copy(pbfs, args.copies, tmp))
        for pbf in inputs:
            rows.append(
                (pbf.name, ours(pbf, tmp, args.repeat), osmium_export(pbf, tmp, args.repeat))
            )
    med = statistics.median
    head = (
        f"{'file':<22}{'objects':>8}{'ours s':>8}{'cpu s':>7}{'obj/s':>8}{'MB':>6}"
        f"{'osmium s':>9}{'cpu s':>7}{'MB':>5}{'ratio':>7}{'cpu r':>7}{'cold s':>8}{'c.ratio':>8}"
        f"{'floor s':>8}{'f.ratio':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, us, ref in rows:
        wall, ref_wall = med(us["wall"]), med(ref["wall"])
        print(
            f"{name:<22}{us['objects']:>8}{wall:>8.3f}{med(us['cpu']):>7.3f}"
            f"{us['objects'] / wall:>8.0f}{us['peak_mb']:>6.0f}"
            f"{ref_wall:>9.3f}{med(ref['cpu']):>7.3f}{ref['peak_mb']:>5.0f}"
            f"{wall / ref_wall:>7.2f}{med(us['cpu']) / med(ref['cpu']):>7.2f}"
            f"{us['cold_s']:>8.2f}{us['cold_s'] / ref_wall:>8.1f}"
            f"{med(us['floor_wall']):>8.3f}{med(us['floor_wall']) / ref_wall:>8.2f}"
        )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\nmedians of {args.repeat} runs; load average {load} on {os.cpu_count()} "
        "cores (shared machine).\n"
        "ours: visible-tag objects -> partitioned GeoParquet with metric sizes (library call, "
        "warm imports);\nosmium: all tagged objects -> GeoJSON lines (whole command). ratio = "
        "wall-time ratio, cpu r = CPU-time ratio;\ncold s = our whole process (start, imports, "
        "one extraction), c.ratio = cold s / osmium wall;\nfloor s = the same file through "
        "pyosmium with the same filters, each object's tags and WKB taken and nothing else "
        "done\n(the least any pyosmium-based extractor does), f.ratio = floor s / osmium wall."
    )


if __name__ == "__main__":
    main()

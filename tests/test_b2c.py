"""Box-to-Caption: the paper's five captions, wording, determinism, options, tiling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrascribe.records import ImageObject
from terrascribe.text.boxes import (
    B2COptions,
    TemplateError,
    box_captions,
    clip_to_window,
    count_phrase,
    derive_seed,
    in_centre,
    load_templates,
    normalise_class,
    pluralise,
    position_name,
    size_phrase,
    tile_windows,
)

W = H = 400
CENTRE = ("ship", (180, 180, 220, 220))
HARBOR = ("harbor", (10, 10, 60, 60))


def texts(*args, **kwargs) -> list[str]:
    """Caption texts, lower-cased (templates may start with the noun phrase)."""
    return [c.text.lower() for c in box_captions(*args, **kwargs)]


def test_five_captions_centre_then_edge_then_categories() -> None:
    objs = [CENTRE, HARBOR, ("small-vehicle", (300, 300, 310, 305))]
    caps = box_captions(objs, W, H, seed=0)
    assert len(caps) == 5
    assert [c.kind for c in caps[:2]] == ["centre", "edge"]
    assert all(c.kind == "category" for c in caps[2:])
    low = [c.text.lower() for c in caps]
    assert "one ship" in low[0] and "harbor" not in low[0]
    assert "one harbor" in low[1] and "one small vehicle" in low[1]
    assert "ship" not in low[1]
    # three categories, three per-category captions: each category once
    assert sorted(
        next(n for n in ("ship", "harbor", "small vehicle") if n in c.text) for c in caps[2:]
    ) == ["harbor", "ship", "small vehicle"]


def test_empty_regions_and_images() -> None:
    caps = box_captions([HARBOR], W, H, seed=1)
    assert caps[0].kind == "centre_empty" and caps[0].template_id.startswith("centre-empty")
    caps = box_captions([CENTRE], W, H, seed=1)
    assert caps[1].template_id.startswith("edge-empty")
    only = box_captions([], W, H)
    assert len(only) == 1 and only[0].kind == "empty"


def test_many_above_ten_and_number_words() -> None:
    assert count_phrase(1, "ship") == "one ship"
    assert count_phrase(3, "storage tank") == "three storage tanks"
    assert count_phrase(10, "bus") == "ten buses"
    assert count_phrase(11, "ship") == "many ships"
    cars = [("car", (i * 20, 300, i * 20 + 10, 310)) for i in range(11)]
    assert all("many cars" in t for t in texts(cars, W, H, seed=0)[1:])
    assert any("ten cars" in t for t in texts(cars[:10], W, H, seed=0))
    with pytest.raises(ValueError):
        count_phrase(0, "ship")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("small-vehicle", "small vehicle"),
        ("Ground_Track_Field", "ground track field"),
        ("storagetank", "storage tank"),
        ("Expressway-Service-area", "expressway service area"),
        ("baseballDiamond", "baseball diamond"),
        ("Tree", "tree"),
    ],
)
def test_class_names_are_normalised(raw: str, name: str) -> None:
    assert normalise_class(raw) == name


@pytest.mark.parametrize(
    ("noun", "plural"),
    [
        ("ship", "ships"),
        ("bus", "buses"),
        ("ferry", "ferries"),
        ("storage tank", "storage tanks"),
        ("person", "people"),
        ("church", "churches"),
        ("runway", "runways"),
    ],
)
def test_plurals(noun: str, plural: str) -> None:
    assert pluralise(noun) == plural


def test_agreement() -> None:
    for seed in range(6):
        one = texts([CENTRE], W, H, seed=seed)[0]
        assert re.search(r"\bis\b", one) and not re.search(r"\bare\b", one), one
        two = texts([CENTRE, ("ship", (190, 190, 210, 210))], W, H, seed=seed)[0]
        assert "two ships" in two and re.search(r"\bare\b", two) and " is " not in two, two


def test_template_ids_recorded_and_exist() -> None:
    templates = load_templates()
    ids = {tid for kind in templates.templates.values() for tid, _ in kind}
    for seed in range(20):
        for c in box_captions([CENTRE, HARBOR], W, H, seed=seed):
            assert c.template_id in ids
    assert templates.tag == "terrascribe-b2c@1.0"


def test_seeded_and_deterministic() -> None:
    objs = [CENTRE, HARBOR, ("plane", (300, 20, 340, 60)), ("plane", (350, 20, 390, 60))]
    assert box_captions(objs, W, H, seed=5) == box_captions(objs, W, H, seed=5)
    variants = {tuple(texts(objs, W, H, seed=s)) for s in range(10)}
    assert len(variants) > 1
    assert derive_seed(0, "a") == derive_seed(0, "a") != derive_seed(0, "b")


def test_accepts_image_objects() -> None:
    objs = [ImageObject("ship", (180, 180, 220, 220))]
    assert texts(objs, W, H, seed=0) == texts([CENTRE], W, H, seed=0)


def test_describe_all_positions_and_sizes() -> None:
    objs = [CENTRE, HARBOR, ("harbor", (70, 10, 110, 60))]
    all_caps = box_captions(objs, W, H, seed=0, options=B2COptions(describe_all=True))
    assert all("ship" in c.text.lower() and "two harbors" in c.text.lower() for c in all_caps[2:])
    pos = box_captions(objs, W, H, seed=0, options=B2COptions(positions=True))
    assert any("top left" in c.text for c in pos[2:] if "harbors" in c.text)
    near = [("ship", (100, 100, 120, 140)), ("harbor", (121, 100, 160, 140))]
    kinds = {
        c.kind
        for s in range(10)
        for c in box_captions(near, W, H, seed=s, options=B2COptions(positions=True))
    }
    assert "next_to" in kinds
    sized = texts([CENTRE], W, H, seed=0, gsd_m=0.5, options=B2COptions(sizes=True))
    assert all("about 20 m long" in t for t in sized[2:])
    # no GSD, no sizes
    assert all(" m long" not in t for t in texts([CENTRE], W, H, options=B2COptions(sizes=True)))


def test_geometry_helpers() -> None:
    assert in_centre((190, 190, 210, 210), 400, 400) and not in_centre((0, 0, 20, 20), 400, 400)
    assert position_name(10, 10, 300, 300) == "top left"
    assert position_name(150, 150, 300, 300) == "centre"
    assert position_name(290, 150, 300, 300) == "right"
    assert size_phrase([4.52, 4.49]) == "about 4.5 m long"
    assert size_phrase([12.2, 30.6]) == "12-31 m long"


def test_tile_windows_cover_the_scene() -> None:
    windows = tile_windows(1000, 700, 512, 64)
    assert all(x1 - x0 == 512 and y1 - y0 == 512 for x0, y0, x1, y1 in windows)
    assert {w[2] for w in windows} >= {1000} and {w[3] for w in windows} >= {700}
    assert tile_windows(300, 200, 512) == [(0, 0, 300, 200)]
    with pytest.raises(ValueError):
        tile_windows(100, 100, 64, 64)


def test_clip_to_window_drops_slivers() -> None:
    boxes = [(0, 0, 10, 10), (95, 0, 105, 10), (98, 0, 108, 10), (200, 200, 210, 210)]
    kept = clip_to_window(boxes, (0, 0, 100, 100), min_visibility=0.4)
    assert [(i, xyxy) for i, xyxy, _ in kept] == [(0, (0, 0, 10, 10)), (1, (95, 0, 100, 10))]
    assert kept[1][2] == pytest.approx(0.5)
    shifted = clip_to_window(boxes, (90, 0, 190, 100), min_visibility=1.0)
    assert [(i, xyxy) for i, xyxy, _ in shifted] == [(1, (5, 0, 15, 10)), (2, (8, 0, 18, 10))]


def test_custom_templates_are_validated(tmp_path: Path) -> None:
    data = json.loads(
        (Path(__file__).parents[1] / "src/terrascribe/text/data/b2c_templates.json").read_text()
    )
    data["templates"]["centre"][0]["text"] = "There {verb} {objects}."
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(TemplateError, match=r"unknown placeholder\(s\) \['verb'\]"):
        load_templates(tmp_path / "t.json")
    data["templates"]["centre"][0]["text"] = "There {be} {objects}."
    del data["templates"]["edge"]
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(TemplateError, match="no templates of kind 'edge'"):
        load_templates(tmp_path / "t.json")
    with pytest.raises(TemplateError, match="cannot read"):
        load_templates(tmp_path / "missing.json")


NUMBER = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|many)\b")
LABELS = st.sampled_from(["ship", "small-vehicle", "storagetank", "harbor", "plane"])


@st.composite
def scenes(draw):
    width = draw(st.integers(16, 2000))
    height = draw(st.integers(16, 2000))
    n = draw(st.integers(0, 30))
    objs = []
    for _ in range(n):
        x0 = draw(st.floats(0, width - 1))
        y0 = draw(st.floats(0, height - 1))
        x1 = draw(st.floats(x0, width))
        y1 = draw(st.floats(y0, height))
        objs.append((draw(LABELS), (x0, y0, x1, y1)))
    return width, height, objs


@settings(max_examples=60, deadline=None)
@given(scene=scenes(), seed=st.integers(0, 2**32), positions=st.booleans(), every=st.booleans())
def test_any_boxes_give_sound_captions(scene, seed, positions, every) -> None:
    width, height, objs = scene
    options = B2COptions(positions=positions, describe_all=every, sizes=True)
    caps = box_captions(objs, width, height, seed=seed, gsd_m=0.3, options=options)
    assert caps == box_captions(objs, width, height, seed=seed, gsd_m=0.3, options=options)
    if not objs:
        assert [c.kind for c in caps] == ["empty"]
        return
    assert len(caps) == 5
    for c in caps:
        assert c.text and c.text[0].isupper() and c.text.endswith(".")
        assert "{" not in c.text and "  " not in c.text
    counts: dict[str, int] = {}
    for label, _ in objs:
        counts[normalise_class(label)] = counts.get(normalise_class(label), 0) + 1
    # every per-category caption states the right count for the category it names first
    for c in caps[2:]:
        if c.kind in ("category", "category_at"):
            text = c.text.lower()
            noun = next(n for n in sorted(counts, key=len, reverse=True) if n in text)
            assert count_phrase(counts[noun], noun) in text
            assert NUMBER.search(text)

"""Mask-to-Box (M2B), as RemoteCLIP describes it: segmentation masks -> horizontal boxes.

For each class present in a label mask: a binary image (this class vs the rest), its outer
contours by Suzuki's border following (``cv2.findContours`` with ``RETR_EXTERNAL``, so holes and
nested parts do not make extra boxes), and one horizontal box per contour from the contour's
extreme points. The boxes then go to Box-to-Caption like any detection annotation.

Boxes use pixel *edges*: a region covering columns 3..7 gives ``xmin = 3, xmax = 8``, the same
convention as COCO/VOC boxes drawn around whole pixels.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import cv2
import numpy as np

from terrascribe.sources.annotations import Box, mask_values


def mask_to_boxes(
    mask: np.ndarray,
    classes: Mapping[int, str],
    *,
    ignore: Collection[str] = (),
    min_area: float = 0.0,
    offset: tuple[int, int] = (0, 0),
) -> list[Box]:
    """Turn an ``(H, W)`` integer label mask into one box per connected outer contour.

    Args:
        mask: Class id per pixel.
        classes: Class name per id (ids missing here raise ``KeyError``: check the mask first
            with :func:`terrascribe.sources.annotations.read_mask`).
        ignore: Class names that are not objects (background, clutter, no-data).
        min_area: Drop boxes whose area (width x height, in square pixels) is below this.
        offset: ``(x, y)`` added to every box (for masks cut from a larger scene).

    Returns:
        Boxes sorted by class id, then by position (top-to-bottom, left-to-right), with
        ``source_id`` ``"<class id>:<n>"``.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    ignored = set(ignore)
    ox, oy = offset
    boxes: list[Box] = []
    for value in mask_values(mask):
        name = classes[int(value)]
        if name in ignored:
            continue
        binary = np.equal(mask, value).view(np.uint8)  # bool -> uint8 without a copy
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        found = []
        for contour in contours:
            points = contour.reshape(-1, 2)
            # extreme points of the outer border; +1 turns the last pixel index into its far edge
            x0, y0 = points.min(axis=0)
            x1, y1 = points.max(axis=0) + 1
            if (x1 - x0) * (y1 - y0) < min_area:
                continue
            found.append((int(y0), int(x0), int(x1), int(y1)))
        for n, (y0, x0, x1, y1) in enumerate(sorted(found)):
            boxes.append(
                Box(
                    label=name,
                    xyxy=(float(x0 + ox), float(y0 + oy), float(x1 + ox), float(y1 + oy)),
                    source_id=f"{int(value)}:{n}",
                )
            )
    return boxes

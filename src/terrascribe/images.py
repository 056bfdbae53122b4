"""Image decoding and encoding shared by every stage (Pillow and OpenCV, no torch).

Decoding is strict: a truncated or corrupt file raises :class:`ImageError` naming the source, so a
long job can record the item and carry on instead of writing a broken sample.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

JPEG_QUALITY = 95
_JPEG_MAGIC = b"\xff\xd8\xff"


class ImageError(ValueError):
    """An image could not be decoded or encoded."""


def decode_rgb(data: bytes, *, source: str = "<bytes>") -> Image.Image:
    """Decode encoded image bytes fully into an RGB PIL image.

    Args:
        data: Encoded image (JPEG, PNG, TIFF, WebP...).
        source: Name used in error messages (file path or sample key).

    Returns:
        A loaded RGB image.

    Raises:
        ImageError: If the bytes are empty, truncated or not an image.
    """
    if not data:
        raise ImageError(f"{source}: image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()  # full decode: .verify() misses truncated JPEG scans
                return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{source}: cannot decode image ({err})") from None
    except Image.DecompressionBombWarning as err:
        raise ImageError(f"{source}: image too large ({err})") from None


def read_rgb(path: str | Path) -> Image.Image:
    """Read and fully decode an image file as RGB, with errors naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read file ({err.strerror or err})") from None
    return decode_rgb(data, source=str(path))


def encode_jpeg(image: Image.Image | np.ndarray, *, quality: int = JPEG_QUALITY) -> bytes:
    """Encode an RGB image as baseline JPEG, deterministically (no EXIF, no timestamps).

    The encoder is OpenCV's libjpeg-turbo (4:4:4 chroma, no optimised Huffman tables), which
    releases the GIL while it works, so a writer thread can encode one sample while Python makes
    the next. With these settings it writes the same bytes as Pillow's JPEG encoder.
    """
    import cv2  # lazily: most commands never encode a JPEG

    if isinstance(image, Image.Image):
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        quality,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ]
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f"JPEG encoding failed for a {image.shape} image")
    return encoded.tobytes()


def to_jpeg(
    image: bytes | np.ndarray, *, source: str = "<image>", quality: int = JPEG_QUALITY
) -> tuple[bytes, tuple[int, int]]:
    """Return ``(jpeg_bytes, (width, height))`` for encoded bytes or an RGB array.

    RGB JPEG input is validated by a full decode and passed through unchanged (no generation
    loss); anything else is decoded and re-encoded as JPEG.

    Raises:
        ImageError: If the input cannot be decoded.
    """
    if isinstance(image, np.ndarray):
        return encode_jpeg(image, quality=quality), (image.shape[1], image.shape[0])
    data = bytes(image)
    decoded = decode_rgb(data, source=source)
    if data.startswith(_JPEG_MAGIC) and _is_rgb_jpeg(data):
        return data, decoded.size
    return encode_jpeg(decoded, quality=quality), decoded.size


def _is_rgb_jpeg(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        return img.format == "JPEG" and img.mode == "RGB"

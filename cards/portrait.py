"""A card's image as her portrait, and a portrait as a card's image (Pillow)."""
from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # refuse to decode more (a decompression bomb hides in a small PNG)
MAX_SIDE = 1024  # the talking head renders at 256/512 px; more only costs time


def portrait_png(data: bytes) -> bytes:
    """The image in ``data`` as a PNG of at most MAX_SIDE px, without text chunks (so no stale card in it).

    Raises ValueError with a short reason when it cannot be read.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"the image is {img.width}x{img.height} pixels, too large to decode")
            img.load()
            pic = img.convert("RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the image could not be read ({exc})") from exc
    pic.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    pic.save(out, "PNG", optimize=False)
    return out.getvalue()


def placeholder_png(name: str, size: tuple[int, int] = (400, 600)) -> bytes:
    """A plain card image for a character without a portrait: a soft colour from her name, a head and shoulders."""
    hue = hashlib.sha1(name.encode("utf-8")).digest()
    bg = tuple(150 + b % 90 for b in hue[:3])
    fg = tuple(max(c - 70, 0) for c in bg)
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse((w * 0.3, h * 0.2, w * 0.7, h * 0.47), fill=fg)
    draw.ellipse((w * 0.12, h * 0.52, w * 0.88, h * 1.1), fill=fg)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()

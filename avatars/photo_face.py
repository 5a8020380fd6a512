"""The face of a public-domain photo made ready to paint around: upright, lips closed, a clear forehead.

skimage.data.astronaut() (NASA, public domain) gives the eyes, nose, mouth and chin, so FaceMesh finds the
face in the finished portrait and the talking head can move it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drawing import SIZE, Image, line_mask, noise, paint, soft_mask, spline, tapered, to_uint8  # noqa: E402

from talking_head.face import (  # noqa: E402
    CHIN,
    FACE_OVAL,
    FOREHEAD,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    Face,
    detect_face,
)

__all__ = ["FACE_OVAL", "Face", "Frame", "detect_face", "line_mask", "prepared_face"]
# FaceMesh eyebrow outlines (upper edge, lower edge), image-left brow first
BROW_PAIRS = (([70, 63, 105, 66, 107], [46, 53, 52, 65, 55]), ([300, 293, 334, 296, 336], [276, 283, 282, 295, 285]))
UPPER_LIDS = ([33, 246, 161, 160, 159, 158, 157, 173, 133], [263, 466, 388, 387, 386, 385, 384, 398, 362])


class Frame:
    """Face-relative coordinates: u across (face heights from the centre line), v down (0 forehead, 1 chin)."""

    def __init__(self, face: Face) -> None:
        p = face.points
        self.h = face.height
        self.cx = float(p[[10, 152, 168, 1], 0].mean())
        self.top = float(p[10, 1])

    def __call__(self, pts: list[tuple[float, float]]) -> np.ndarray:
        a = np.asarray(pts, np.float64)
        return np.stack([self.cx + a[:, 0] * self.h, self.top + a[:, 1] * self.h], axis=1)

    def mirror(self, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        """Left half of a symmetric outline (top to bottom) -> the closed outline, right half mirrored."""
        return list(pts) + [(-u, v) for u, v in reversed(pts)]


def must_detect(rgb: np.ndarray, step: str) -> Face:
    face = detect_face(np.clip(rgb * 255 if rgb.dtype != np.uint8 else rgb, 0, 255).astype(np.uint8))
    if face is None:
        raise SystemExit(f"make_avatars: FaceMesh lost the face after '{step}'; soften that step.")
    return face


def aligned_face(height: float, centre: tuple[float, float]) -> tuple[Image, Face]:
    """skimage's astronaut photo rotated upright and scaled so forehead-to-chin is ``height`` pixels."""
    src = skimage.data.astronaut()
    f = must_detect(src, "load")
    top, chin = f.points[FOREHEAD].astype(np.float64), f.points[CHIN].astype(np.float64)
    angle = np.degrees(np.arctan2(chin[0] - top[0], chin[1] - top[1]))  # >0: chin right of forehead
    mid = (top + chin) / 2
    m = cv2.getRotationMatrix2D((float(mid[0]), float(mid[1])), -angle, height / np.linalg.norm(chin - top))
    m[:, 2] += np.asarray(centre) - mid
    img = cv2.warpAffine(src, m, (SIZE, SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    img = img.astype(np.float32) / 255
    return img, must_detect(img, "align")


def _remap(img: Image, mx: np.ndarray, my: np.ndarray) -> Image:
    return cv2.remap(img, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_CUBIC,
                     borderMode=cv2.BORDER_REFLECT)


def close_lips(img: Image, face: Face) -> Image:
    """Remove the band of teeth between the inner lips: everything below it moves up by the gap.

    Portraits of these eras never show teeth; and a closed mouth at rest lets the talking head open it.
    """
    p = face.points
    up = p[LIPS_INNER_UPPER][np.argsort(p[LIPS_INNER_UPPER][:, 0])]
    lo = p[LIPS_INNER_LOWER][np.argsort(p[LIPS_INNER_LOWER][:, 0])]
    xs = np.arange(SIZE, dtype=np.float32)
    u = np.interp(xs, up[:, 0], up[:, 1])
    g = np.clip(np.interp(xs, lo[:, 0], lo[:, 1]) - u, 0, None)
    g[(xs < up[0, 0]) | (xs > up[-1, 0])] = 0
    h = face.height
    cx = float(up[:, 0].mean())
    gs = g.max() * np.exp(-(((xs - cx) / (0.3 * h)) ** 2))  # what the chin does: a smooth bump
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    t = np.clip((yy - u[None, :]) / (0.2 * h), 0, 1)
    fade = np.clip((p[CHIN, 1] + 0.3 * h - yy) / (0.3 * h), 0, 1)
    shift = np.where(yy >= u[None, :], (g[None, :] * (1 - t) + gs[None, :] * t) * fade, 0)
    return _remap(img, xx, yy + shift)


def narrow(img: Image, face: Face, mouth: float = 0.0, jaw: float = 0.0, corners: float = 0.0) -> Image:
    """A smaller mouth, a slimmer lower face (oval 'goose-egg' face), and mouth corners lowered by
    ``corners`` face heights (a broad smile becomes a faint one)."""
    p, h = face.points, face.height
    cx = float((p[61, 0] + p[291, 0]) / 2)
    my = float((p[13, 1] + p[14, 1]) / 2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    bump = np.exp(-(((xx - cx) / (0.35 * h)) ** 2 + ((yy - my) / (0.12 * h)) ** 2))
    eye_y = float(p[[33, 263], 1].mean())
    lower = np.clip((yy - eye_y) / (p[CHIN, 1] - eye_y), 0, 1.3) * np.exp(-(((xx - cx) / (0.7 * h)) ** 2))
    k = 1 + mouth * bump + jaw * lower
    dy = np.zeros_like(yy)
    for i in (61, 291):
        c = p[i]
        dy += np.exp(-(((xx - c[0]) / (0.07 * h)) ** 2 + ((yy - c[1]) / (0.06 * h)) ** 2))
    return _remap(img, cx + (xx - cx) * k, yy - corners * h * dy)


def face_mask(face: Face, feather: float = 2.0, grow: float = 0.0) -> np.ndarray:
    """Soft mask of the face oval (optionally grown outwards by ``grow`` face heights)."""
    oval = face.points[FACE_OVAL].astype(np.float64)
    c = oval.mean(axis=0)
    oval = c + (oval - c) * (1 + grow)
    return soft_mask(oval, feather)


# --- drawing primitives ---------------------------------------------------------------------------


def brow_top(face: Face) -> tuple[np.ndarray, np.ndarray]:
    """Per-column y just above the eyebrows (x, y arrays), from the brows' upper landmarks."""
    ids = [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]
    pts = face.points[ids]
    order = np.argsort(pts[:, 0])
    return pts[order, 0], pts[order, 1]


def extend_forehead(img: Image, face: Face, rng: np.random.Generator, margin: float = 0.035) -> Image:
    """Replace whatever lies above the brows (a photo's fringe) with smooth skin, so hair can be drawn higher.

    The colour is the skin between the brows; the photo's own light falloff towards the temples is kept.
    """
    h = face.height
    bx, by = brow_top(face)
    xs = np.arange(SIZE, dtype=np.float32)
    y_ref = np.interp(xs, bx, by) - margin * h
    c = face.points[168].astype(int)
    ref = img[c[1] - 3: c[1] + 3, c[0] - 3: c[0] + 3].reshape(-1, 3).mean(axis=0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    # rounder forehead: light in the middle, falling off towards the temples
    light = 1.03 - 0.16 * ((xx - c[0]) / (0.45 * h)) ** 2 - 0.05 * ((yy - (y_ref.min() - 0.1 * h)) / (0.2 * h)) ** 2
    skin = ref[None, None, :] * np.clip(light, 0.7, 1.05)[..., None]
    skin = skin + 0.004 * noise(rng, 1.5)[..., None]
    w = np.clip((y_ref[None, :] - yy) / (0.05 * h), 0, 1)[..., None]
    return img * (1 - w) + skin * w


def painted_skin(img: Image, target: np.ndarray, amount: float, smooth: float = 40, edges: float = 0.25) -> Image:
    """A painted face: photo texture and creases smoothed away (edges kept), colour pulled to ``target``."""
    x = cv2.edgePreservingFilter(to_uint8(img), flags=cv2.RECURS_FILTER, sigma_s=smooth, sigma_r=edges)
    x = x.astype(np.float32) / 255
    lum = x.mean(axis=2, keepdims=True)
    return np.clip(x * (1 - amount) + target * (lum / float(target.mean())) * amount, 0, 1)


def blush(canvas: Image, face: Face, colour: np.ndarray, cheeks: float, lips: float) -> None:
    """Rouge on the cheeks and colour on the lips, as painters of both eras did."""
    p, h = face.points, face.height
    for i in (205, 425):  # cheek centres
        c = p[i]
        yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
        paint(canvas, np.exp(-(((xx - c[0]) / (0.1 * h)) ** 2 + ((yy - c[1]) / (0.07 * h)) ** 2)), colour, cheeks)
    lip = np.vstack([p[LIPS_OUTER_UPPER], p[LIPS_OUTER_LOWER][::-1]])
    m = soft_mask(lip, 0.8)
    paint(canvas, m, canvas * colour * 1.1, lips)


def prepared_face(height: float, centre: tuple[float, float], mouth: float, jaw: float, corners: float,
                  rng: np.random.Generator) -> tuple[Image, Face]:
    """The photo's face, upright, lips closed, narrowed, with a clear forehead; and its landmarks."""
    img, face = aligned_face(height, centre)
    img = close_lips(img, face)
    face = must_detect(img, "close the lips")
    if mouth or jaw or corners:
        img = narrow(img, face, mouth=mouth, jaw=jaw, corners=corners)
        face = must_detect(img, "narrow")
    img = extend_forehead(img, face, rng)
    return img, must_detect(img, "forehead")


def brows(canvas: Image, face: Face, colour: np.ndarray, width: float, lift: float, extend: float,
          alpha: float, blur: float) -> None:
    """Paint over the photo's brows with skin, then draw new ones along them."""
    p = face.points
    hole = np.zeros((SIZE, SIZE), np.float32)
    for upper, lower in BROW_PAIRS:
        poly = np.vstack([p[upper], p[lower][::-1]])
        c = poly.mean(axis=0)
        hole = np.maximum(hole, soft_mask(c + (poly - c) * 1.4, 0))
    u8 = to_uint8(canvas)
    filled = cv2.inpaint(u8, (hole > 0.3).astype(np.uint8), 6, cv2.INPAINT_TELEA).astype(np.float32) / 255
    paint(canvas, cv2.GaussianBlur(hole, (0, 0), 2), cv2.GaussianBlur(filled, (0, 0), 2.5))
    for upper, lower in BROW_PAIRS:
        mid = (p[upper] + p[lower]) / 2
        inner, outer = mid[-1], mid[0]
        direction = (outer - inner) / np.linalg.norm(outer - inner)
        curve = spline([inner, *mid[3:0:-1], outer + direction * extend * face.height])
        curve[:, 1] -= lift * face.height * np.sin(np.linspace(0, np.pi, len(curve)))
        stroke = soft_mask(tapered(curve, width * 0.9, width * 0.15, width), blur)
        paint(canvas, stroke, colour, alpha)


def lids(canvas: Image, face: Face, colour: np.ndarray, width: float, alpha: float) -> None:
    """A painter's line along each upper eyelid (it moves with the lid when the head blinks)."""
    for ids in UPPER_LIDS:
        curve = spline(face.points[ids] - [0, 0.6])
        paint(canvas, soft_mask(tapered(curve, width * 0.5, width * 0.7, width * 1.2), 0.5), colour, alpha)

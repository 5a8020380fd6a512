"""Lin Daiyu as a Qing-dynasty painting: ink outlines and pale colour on rice paper, bamboo behind her."""
from __future__ import annotations

import cv2
import numpy as np
from drawing import (
    SIZE,
    Image,
    combed,
    line_mask,
    noise,
    paint,
    rgb,
    soft_mask,
    spline,
    tapered,
    to_uint8,
    volume,
)
from photo_face import FACE_OVAL, Frame, blush, brows, lids, painted_skin, prepared_face


def daiyu(rng: np.random.Generator) -> np.ndarray:
    """Lin Daiyu: a Qing-dynasty young lady in moon-white silk among the bamboo of the Xiaoxiang Lodge."""
    face_img, face = prepared_face(160, (256, 205), mouth=0.22, jaw=0.14, corners=0.012, rng=rng)
    f = Frame(face)
    ink = rgb("#2e2e33")
    canvas = np.ones((SIZE, SIZE, 3), np.float32) * rgb("#efe5cf")
    bamboo(canvas, rng)
    face_img = painted_skin(face_img, rgb("#f7e4da"), 0.4)
    skin = face_img[int(face.points[6, 1]) - 4: int(face.points[6, 1]) + 4, int(f.cx) - 4: int(f.cx) + 4]
    skin = skin.reshape(-1, 3).mean(axis=0)

    # neck, then the jacket: sloping shoulders, moon-white silk, jade trim, a low stand collar
    neck = f([(-0.13, 0.6), (-0.11, 1.1), (0.11, 1.1), (0.13, 0.6)])
    paint(canvas, soft_mask(neck, 1.2), skin * 0.95)
    paint(canvas, soft_mask(f([(-0.14, 0.85), (0, 1.07), (0.14, 0.85), (0.14, 0.6), (-0.14, 0.6)]), 6), skin * 0.8, 0.5)
    body = spline(f(f.mirror([(-0.12, 1.04), (-0.26, 1.15), (-0.5, 1.27), (-0.7, 1.42), (-0.82, 1.75), (-0.9, 2.3),
                              (-0.95, 2.9)])), closed=True, n=12)
    m_body = soft_mask(body, 0.8)
    silk = rgb("#e2ebe7")
    folds = 0.03 * noise(rng, 8, (0.5, 3))[..., None]
    paint(canvas, m_body, silk * (0.9 + 0.1 * volume(m_body, 50)[..., None] + folds))
    for pts in ([(-0.62, 1.5), (-0.66, 1.9), (-0.64, 2.4)], [(0.6, 1.5), (0.65, 1.9), (0.62, 2.4)],
                [(-0.4, 1.65), (-0.44, 2.3)], [(0.2, 1.6), (0.24, 2.2)]):
        paint(canvas, line_mask(spline(f(pts)), 1.2, 0.5), ink, 0.3)
    jade = rgb("#93c2ad")
    collar = spline(f([(-0.14, 0.98), (0, 1.05), (0.14, 0.98)]))
    collar_band = np.vstack([collar, (collar + [0, 0.09 * f.h])[::-1]])
    trim = spline(f([(0.0, 1.15), (-0.12, 1.24), (-0.3, 1.32), (-0.44, 1.42), (-0.52, 1.75), (-0.55, 2.9)]))
    paint(canvas, soft_mask(tapered(trim, 0.08 * f.h, 0.08 * f.h), 0.6), jade)
    paint(canvas, soft_mask(collar_band, 0.7), jade)
    for k in range(4, len(trim) - 4, 9):  # embroidered blossoms along the trim
        c = trim[k]
        for j in range(5):
            a = 2 * np.pi * j / 5
            paint(canvas, soft_mask(cv2.ellipse2Poly((int(c[0] + 2.2 * np.cos(a)), int(c[1] + 2.2 * np.sin(a))),
                                                     (2, 2), 0, 0, 360, 30).astype(np.float64), 0.5),
                  rgb("#e9a3ad") if k % 2 else rgb("#f4f1e6"), 0.9)
        paint(canvas, soft_mask(cv2.ellipse2Poly((int(c[0]), int(c[1])), (1, 1), 0, 0, 360, 30).astype(np.float64),
                                0.5), rgb("#c98a2b"))
    for edge in (collar, collar + [0, 0.09 * f.h], trim + [0, 0.04 * f.h], trim - [0, 0.04 * f.h]):
        paint(canvas, line_mask(edge, 1.2, 0.5), rgb("#3f5f78"), 0.7)
    paint(canvas, line_mask(body, 1.3, 0.5), ink, 0.7)

    # the face, a little inside its outline, with a forehead reaching up under the hairline
    oval = face.points[FACE_OVAL].astype(np.float64)
    centre = oval.mean(axis=0)
    oval = centre + (oval - centre) * 0.98
    upper = oval[:, 1] < face.points[168, 1]
    oval[upper, 1] -= 0.2 * f.h * np.clip(1 - np.abs(oval[upper, 0] - f.cx) / (0.6 * f.h), 0, 1)
    paint(canvas, soft_mask(oval, 1.0), face_img)
    paint(canvas, line_mask(spline(oval[6:31]), 1.0, 0.6), rgb("#9a7466"), 0.5)
    brows(canvas, face, rgb("#3a3436"), 0.016 * f.h, 0.004, 0.1, 0.8, 0.6)
    lids(canvas, face, rgb("#2a2024"), 1.4, 0.55)
    blush(canvas, face, rgb("#e89a9a"), 0.14, 0.6)

    # hair: centre parting, smooth wings over the temples and ears, a high bun with pins and flowers
    hairline = f([(0.0, -0.2), (-0.14, -0.18), (-0.28, -0.1), (-0.37, 0.04), (-0.4, 0.2), (-0.41, 0.34),
                  (-0.42, 0.46)])
    outer = f([(0.0, -0.45), (-0.25, -0.42), (-0.45, -0.28), (-0.55, -0.05), (-0.56, 0.18), (-0.5, 0.4),
               (-0.44, 0.52)])
    left = [tuple(x) for x in np.vstack([hairline, outer[::-1]])]
    hair = np.vstack([spline(left), spline([(2 * f.cx - x, y) for x, y in left])[::-1]])
    m_hair = soft_mask(hair, 0.7)
    bun = spline(f(f.mirror([(0.0, -0.64), (-0.16, -0.63), (-0.28, -0.57), (-0.31, -0.48), (-0.2, -0.4)])),
                 closed=True, n=10)
    m_bun = soft_mask(bun, 0.7)
    hair_c = rgb("#1e1e23")
    for m in (m_bun, m_hair):
        vol = volume(m, 16)[..., None]
        paint(canvas, m, hair_c * (0.85 + 0.5 * vol))
        paint(canvas, line_mask(cv2.findContours((m > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL,
                                                   cv2.CHAIN_APPROX_NONE)[0][0][:, 0].astype(np.float64), 1.2, 0.5),
              rgb("#0a0a0c"), 0.6)
    crown = spline(f([(0.0, -0.43), (-0.22, -0.4), (-0.42, -0.27), (-0.52, -0.05), (-0.53, 0.18), (-0.48, 0.4),
                      (-0.43, 0.5)]))
    hl = spline(hairline)
    sheen = rgb("#5b6273")
    for sign in (1, -1):
        combed(canvas, hl * [sign, 1] + [(1 - sign) * f.cx, 0], crown * [sign, 1] + [(1 - sign) * f.cx, 0],
                 m_hair, sheen, rng, count=90, alpha=0.16, bend=0.05 * sign)
    for k in range(12):
        arc = spline(f([(-0.28 + 0.012 * k, -0.48 - 0.012 * k), (0, -0.53 - 0.008 * k),
                        (0.28 - 0.012 * k, -0.48 - 0.012 * k)]))
        paint(canvas, line_mask(arc, 1.0, 0.4) * m_bun, sheen, 0.22)
    paint(canvas, line_mask(spline(f([(-0.3, -0.47), (0, -0.5), (0.3, -0.47)])), 2.0, 0.6), rgb("#0c0c0f"), 0.5)
    paint(canvas, line_mask(hl[len(hl) // 3:], 1.0, 0.5), rgb("#0c0c0f"), 0.3)
    hairpins(canvas, f, rng)
    for side in (-1, 1):  # jade drop earrings under the hair
        top = f([(side * 0.45, 0.5)])[0]
        paint(canvas, line_mask(np.array([top, top + [0, 0.06 * f.h]]), 1.0, 0.4), rgb("#b8952e"), 0.9)
        drop = cv2.ellipse2Poly(tuple(int(x) for x in top + [0, 0.1 * f.h]), (3, 5), 0, 0, 360, 20)
        paint(canvas, soft_mask(drop.astype(np.float64), 0.6), rgb("#5fa585"))
    return to_uint8(paper_finish(canvas, rng))


def hairpins(canvas: Image, f: Frame, rng: np.random.Generator) -> None:
    """A jade hairpin through the bun and a spray of small white plum blossoms beside it."""
    pin = spline(f([(-0.4, -0.44), (0.0, -0.54), (0.38, -0.64)]))
    paint(canvas, soft_mask(tapered(pin, 3.2, 2.0), 0.5), rgb("#7fb39a"))
    paint(canvas, line_mask(pin - [0, 0.8], 1.0, 0.4), rgb("#d6efe2"), 0.7)
    for u, v, r in ((0.33, -0.45, 0.045), (0.41, -0.37, 0.04), (0.27, -0.38, 0.035), (0.45, -0.28, 0.032),
                    (-0.36, -0.41, 0.038)):
        c = f([(u, v)])[0]
        rad = r * f.h
        for k in range(5):
            a = 2 * np.pi * k / 5 + rng.uniform(0, 0.3)
            petal = c + np.array([np.cos(a), np.sin(a)]) * rad * 0.55
            paint(canvas, soft_mask(cv2.ellipse2Poly(tuple(int(x) for x in petal), (int(rad * 0.55) + 1,
                  int(rad * 0.45) + 1), int(np.degrees(a)), 0, 360, 20).astype(np.float64), 0.5),
                  rgb("#f6eef0"), 0.95)
        paint(canvas, soft_mask(cv2.ellipse2Poly(tuple(int(x) for x in c), (2, 2), 0, 0, 360, 20).astype(np.float64),
                                0.5), rgb("#e0a03c"))


def paper_finish(canvas: Image, rng: np.random.Generator) -> Image:
    """Rice-paper grain and fibres, and a slightly aged, darker margin."""
    grain = 0.025 * noise(rng, 0.8) + 0.02 * noise(rng, 1.2, (6, 0.3))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE - 0.5
    age = 1 - 0.12 * (np.abs(xx) ** 3 + np.abs(yy) ** 3) * 4
    return np.clip(canvas * (1 + grain[..., None]) * age[..., None] * rgb("#fffaf0"), 0, 1)


def bamboo(canvas: Image, rng: np.random.Generator) -> None:
    """Ink-wash bamboo: pale far stalks blurred into mist, darker near ones with leaves."""
    ink = rgb("#3e4a3c")
    for depth, alpha, blur in ((0, 0.25, 3.0), (1, 0.55, 0.8)):
        layer = np.zeros((SIZE, SIZE), np.float32)
        xs = rng.uniform(10, 130, 2).tolist() + rng.uniform(390, 500, 2).tolist()
        for x in xs:
            top_x = x + rng.uniform(-25, 25)
            stalk = spline([(x, SIZE + 10), ((x + top_x) / 2 + rng.uniform(-8, 8), SIZE / 2), (top_x, -10)])
            w = rng.uniform(7, 12) * (0.8 + 0.4 * depth)
            s = soft_mask(tapered(stalk, w, w * 0.8), 0.6)
            for y in np.arange(rng.uniform(20, 70), SIZE, rng.uniform(70, 95)):  # nodes: gaps in the ink
                s[int(y): int(y) + 3] *= 0.2
            layer = np.maximum(layer, s * rng.uniform(0.6, 1.0))
            for _ in range(rng.integers(2, 4)):  # leaf clusters on twigs
                y0 = rng.uniform(60, 420)
                x0 = np.interp(y0, stalk[::-1, 1], stalk[::-1, 0])
                side = 1 if x0 < SIZE / 2 else -1
                for k in range(rng.integers(3, 6)):
                    ang = np.radians(rng.uniform(15, 70)) * side
                    length = rng.uniform(35, 65)
                    end = np.array([x0 + np.sin(ang) * length, y0 + np.cos(ang) * length * 0.6 + k * 6])
                    leaf = spline([(x0, y0 + k * 4), ((x0 + end[0]) / 2, (y0 + end[1]) / 2 - 4), tuple(end)])
                    layer = np.maximum(layer, soft_mask(tapered(leaf, 1.5, 0.5, rng.uniform(6, 10)), 0.6)
                                       * rng.uniform(0.5, 1.0))
        layer = cv2.GaussianBlur(layer, (0, 0), blur)
        paint(canvas, layer, ink, alpha)

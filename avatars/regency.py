"""Elizabeth Bennet as a Regency oil portrait: white muslin, a red shawl, dark curls, a sky behind her."""
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
from photo_face import BROW_PAIRS, FACE_OVAL, Frame, blush, face_mask, painted_skin, prepared_face


def curl(canvas: Image, c: np.ndarray, r: float, base: np.ndarray, rng: np.random.Generator) -> None:
    """One ringlet: a shadowed hollow and a spiral brush stroke of hair, lit on its upper-left turns."""
    shadow = cv2.ellipse2Poly((int(c[0] * 4), int(c[1] * 4)), (int(r * 4.2), int(r * 4.8)), 0, 0, 360, 10) / 4
    paint(canvas, soft_mask(shadow.astype(np.float64) + [r * 0.1, r * 0.15], 1.0), base * 0.45, 0.8)
    t = np.linspace(0, 1, 60)
    ang = rng.uniform(0, 2 * np.pi) + 2 * np.pi * 1.5 * t * rng.choice([-1, 1])
    rad = r * (1 - 0.75 * t)
    pts = c + np.stack([np.cos(ang), 1.15 * np.sin(ang)], axis=1) * rad[:, None]
    paint(canvas, soft_mask(tapered(pts, 0.6 * r, 0.15 * r, 0.7 * r), 0.6), base)
    facing = np.clip(-(np.cos(ang) + np.sin(ang)) / np.sqrt(2), 0, 1)  # turns facing the upper-left light
    lit = np.zeros(canvas.shape[:2], np.float32)
    for i in range(len(pts) - 1):
        if facing[i] > 0.2:
            lit = np.maximum(lit, line_mask(pts[i: i + 2] - [0.1 * r, 0.1 * r], 1.2, 0.6) * facing[i])
    paint(canvas, lit, base * 1.8 + 0.05, 0.55)


def elizabeth(rng: np.random.Generator) -> np.ndarray:
    """Elizabeth Bennet: a Regency gentleman's daughter in white muslin, painted in oils around 1812."""
    face_img, face = prepared_face(160, (256, 205), mouth=0.1, jaw=0.08, corners=0.0, rng=rng)
    f = Frame(face)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    glow = np.exp(-(((xx - f.cx) / 190) ** 2 + ((yy - f.top - 0.3 * f.h) / 230) ** 2))[..., None]
    canvas = rgb("#2f2a20") * (1 - glow) + rgb("#7d6e52") * glow
    sky = np.clip((yy - 300) / 120, 0, 1) * np.clip((170 - xx) / 120, 0, 1)
    clouds = rgb("#95a6ad") * (1 + 0.15 * noise(rng, 14)[..., None])
    paint(canvas, cv2.GaussianBlur(sky, (0, 0), 20), clouds, 0.8)
    foliage = np.clip((xx - 380) / 80, 0, 1) * np.clip((yy - 250) / 100, 0, 1) * (0.7 + 0.3 * noise(rng, 10))
    paint(canvas, cv2.GaussianBlur(foliage, (0, 0), 8), rgb("#262c1c"), 0.8)
    face_img = painted_skin(face_img, rgb("#f3d9c9"), 0.25, smooth=30, edges=0.2)
    skin = face_img[int(face.points[6, 1]) - 4: int(face.points[6, 1]) + 4, int(f.cx) - 4: int(f.cx) + 4]
    skin = skin.reshape(-1, 3).mean(axis=0)

    # neck and bosom above a low neckline, lit from the upper left
    chest = spline(f(f.mirror([(-0.13, 0.6), (-0.12, 1.0), (-0.26, 1.18), (-0.6, 1.28), (-0.8, 1.6)])), closed=True)
    m_chest = soft_mask(chest, 1.0)
    light = (1.0 - 0.12 * np.clip((xx - f.cx + 40) / 200, -1, 1))[..., None]
    paint(canvas, m_chest, skin * 0.97 * light)
    paint(canvas, soft_mask(f([(-0.14, 0.85), (0, 1.08), (0.14, 0.85), (0.14, 0.6), (-0.14, 0.6)]), 7), skin * 0.75, 0.55)
    chain = spline(f([(-0.13, 1.02), (-0.08, 1.2), (0, 1.27), (0.08, 1.2), (0.13, 1.02)]))
    paint(canvas, line_mask(chain, 1.0, 0.4), rgb("#c9a040"), 0.8)
    cross = f([(0, 1.28)])[0]
    for a, b in (((0, -0.01), (0, 0.09)), ((-0.03, 0.025), (0.03, 0.025))):
        paint(canvas, line_mask(np.array([cross + np.array(a) * f.h, cross + np.array(b) * f.h]), 2.2, 0.4),
              rgb("#c7822e"))

    # white muslin gown: low square neckline with a frill, puffed short sleeves, a high sash under the bust
    gown = spline(f(f.mirror([(-0.0, 1.52), (-0.32, 1.47), (-0.55, 1.38), (-0.58, 1.3), (-0.7, 1.28),
                              (-0.88, 1.4), (-0.98, 1.8), (-1.05, 2.9)])), closed=True, n=12)
    m_gown = soft_mask(gown, 0.8)
    muslin = rgb("#ece8de")
    folds = 0.06 * noise(rng, 6, (0.5, 3))[..., None]
    paint(canvas, m_gown, muslin * (0.8 + 0.2 * volume(m_gown, 30)[..., None] + folds) * light)
    for side in (-1, 1):
        sleeve = spline(f([(side * 0.56, 1.33), (side * 0.72, 1.25), (side * 0.9, 1.32), (side * 0.99, 1.55),
                           (side * 0.84, 1.68), (side * 0.62, 1.54)]), closed=True)
        m_s = soft_mask(sleeve, 0.8)
        paint(canvas, m_s, muslin * (0.78 + 0.25 * volume(m_s, 14)[..., None]) * light)
        for k in range(3):
            paint(canvas, line_mask(spline(f([(side * (0.68 + 0.08 * k), 1.3), (side * (0.72 + 0.08 * k), 1.48),
                                               (side * (0.7 + 0.08 * k), 1.66)])), 1.4, 1.0) * m_s, muslin * 0.6, 0.5)
    frill = spline(f([(-0.56, 1.38), (-0.32, 1.47), (0.0, 1.52), (0.32, 1.47), (0.56, 1.38)]))
    for k in range(0, len(frill), 3):
        c = frill[k]
        paint(canvas, soft_mask(cv2.ellipse2Poly((int(c[0]), int(c[1])), (4, 3), 0, 0, 360, 30).astype(np.float64),
                                0.6), muslin * 1.05)
    sash = spline(f([(-1.1, 2.12), (-0.5, 2.2), (0, 2.22), (0.5, 2.2), (1.1, 2.12)]))
    paint(canvas, soft_mask(tapered(sash, 0.09 * f.h, 0.09 * f.h), 0.8) * m_gown, rgb("#6f8fb0"))
    # a red cashmere shawl over the right shoulder and round the arms
    for pts, lines in (([(0.62, 1.34), (0.9, 1.28), (1.08, 1.6), (1.2, 2.2), (1.25, 2.9), (0.8, 2.9), (0.86, 2.3),
                         (0.8, 1.8), (0.68, 1.52)], [[(0.8, 1.45), (0.95, 1.9), (1.02, 2.6)],
                                                     [(0.72, 1.5), (0.84, 2.0), (0.9, 2.8)]]),
                       ([(-0.95, 1.75), (-0.75, 1.85), (-0.6, 2.4), (-0.55, 2.9), (-1.2, 2.9), (-1.1, 2.2)],
                        [[(-0.85, 1.9), (-0.75, 2.4), (-0.72, 2.8)]])):
        m_shawl = soft_mask(spline(f(pts), closed=True), 0.8)
        paint(canvas, m_shawl, rgb("#8e2f2b") * (0.65 + 0.45 * volume(m_shawl, 14)[..., None]
                                                   + 0.08 * noise(rng, 5, (0.4, 3))[..., None]) * light)
        for line in lines:
            paint(canvas, line_mask(spline(f(line)), 2.0, 1.5) * m_shawl, rgb("#4a1614"), 0.6)
        border = spline(f(pts[-3:] if pts[0][0] > 0 else pts[:2]))
        paint(canvas, line_mask(border, 3.0, 0.8) * m_shawl, rgb("#c9a24a"), 0.7)

    # the face
    oval = face.points[FACE_OVAL].astype(np.float64)
    centre = oval.mean(axis=0)
    oval = centre + (oval - centre) * 0.99
    upper = oval[:, 1] < face.points[168, 1]
    oval[upper, 1] -= 0.16 * f.h * np.clip(1 - np.abs(oval[upper, 0] - f.cx) / (0.6 * f.h), 0, 1)
    paint(canvas, soft_mask(oval, 1.5), face_img)
    for upper, lower in BROW_PAIRS:  # her own brows, darkened to go with dark hair
        poly = np.vstack([face.points[upper], face.points[lower][::-1]])
        paint(canvas, soft_mask(poly, 1.2), canvas * np.array([0.55, 0.47, 0.42], np.float32), 0.8)
    blush(canvas, face, rgb("#e79a8c"), 0.12, 0.35)

    # dark brown hair: centre parting, smooth crown, a knot on top with a ribbon, curls at the temples
    hair_c = rgb("#3a2519")
    hairline = f([(0.0, -0.16), (-0.15, -0.14), (-0.3, -0.06), (-0.4, 0.08), (-0.44, 0.24), (-0.46, 0.4)])
    outer = f([(0.0, -0.46), (-0.28, -0.42), (-0.48, -0.26), (-0.56, -0.02), (-0.56, 0.22), (-0.52, 0.42)])
    left = [tuple(x) for x in np.vstack([hairline, outer[::-1]])]
    hair = np.vstack([spline(left), spline([(2 * f.cx - x, y) for x, y in left])[::-1]])
    m_hair = soft_mask(hair, 0.8)
    knot = spline(f(f.mirror([(0.0, -0.6), (-0.16, -0.58), (-0.24, -0.5), (-0.18, -0.42)])), closed=True, n=10)
    m_knot = soft_mask(knot, 0.8)
    for m in (m_knot, m_hair):
        vol = volume(m, 18)[..., None]
        paint(canvas, m, hair_c * (0.6 + 0.7 * vol) * light)
    crown = spline(f([(0.0, -0.44), (-0.25, -0.4), (-0.44, -0.25), (-0.52, -0.02), (-0.53, 0.2), (-0.5, 0.4)]))
    hl = spline(hairline)
    for sign in (1, -1):
        combed(canvas, hl * [sign, 1] + [(1 - sign) * f.cx, 0], crown * [sign, 1] + [(1 - sign) * f.cx, 0],
                 m_hair, rgb("#8a6446"), rng, count=90, alpha=0.25, bend=0.05 * sign)
    ribbon = spline(f([(-0.5, -0.12), (-0.3, -0.36), (0.0, -0.43), (0.3, -0.36), (0.5, -0.12)]))
    band = soft_mask(tapered(ribbon, 0.02 * f.h, 0.02 * f.h, 0.03 * f.h), 0.6) * m_hair
    satin = 0.75 + 0.35 * np.clip(1 - (xx - f.cx + 30) ** 2 / (90 ** 2), 0, 1)[..., None]  # lit where it crowns the head
    paint(canvas, band, rgb("#7d9cc0") * satin * 0.9)
    for side in (-1, 1):  # clusters of curls at the temples, ringlets falling beside the ears
        spots = [(0.18 + 0.3 * t + rng.normal(0, 0.02), -0.14 + 0.5 * t ** 1.3 + rng.normal(0, 0.02),
                  rng.uniform(0.035, 0.055)) for t in np.linspace(0, 1, 13)]
        spots += [(0.5 + rng.normal(0, 0.01), 0.42 + 0.07 * k, 0.04 - 0.004 * k) for k in range(4)]
        for u, v, r in spots:
            curl(canvas, f([(side * u, v)])[0], r * f.h, hair_c * rng.uniform(1.1, 1.5), rng)
    return to_uint8(oil_finish(canvas, rng, face_mask(face, 4)))


def oil_finish(canvas: Image, rng: np.random.Generator, face: np.ndarray) -> Image:
    """Brushwork (light on the face, whose features must stay crisp), canvas weave, warm varnish, dark margin."""
    u8 = to_uint8(canvas)
    oil = cv2.xphoto.oilPainting(u8, 4, 1).astype(np.float32) / 255
    w = (0.5 - 0.4 * face)[..., None]
    out = canvas * (1 - w) + oil * w
    strokes = 0.03 * noise(rng, 2.0, (0.6, 2.0)) + 0.02 * noise(rng, 1.5, (2.0, 0.6))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    weave = 0.02 * (np.sin(xx * 2.1) * np.sin(yy * 2.3))
    out = out * (1 + strokes + weave)[..., None]
    vign = 1 - 0.45 * (((xx - 256) / 256) ** 2 + ((yy - 220) / 300) ** 2)
    out = out * np.clip(vign, 0.4, 1)[..., None] * rgb("#fff2d8")
    return np.clip(out, 0, 1)

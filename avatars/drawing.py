"""Painting primitives for the portraits: smooth curves, soft masks, brush strokes, hair, noise.

Everything is deterministic (seeded random numbers, no fonts, no downloads).
"""
from __future__ import annotations

import cv2
import numpy as np

SIZE = 512
Image = np.ndarray  # float32 RGB in 0..1, (SIZE, SIZE, 3)


def spline(points: np.ndarray | list, closed: bool = False, n: int = 24) -> np.ndarray:
    """Catmull-Rom curve through ``points`` with ``n`` samples per segment."""
    pts = np.asarray(points, np.float64)
    if closed:
        pts = np.vstack([pts[-1:], pts, pts[:2]])
    else:
        pts = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    out = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(pts[-2:-1])
    return np.vstack(out)


def soft_mask(poly: np.ndarray, feather: float = 1.0) -> np.ndarray:
    """Anti-aliased filled polygon as a float mask, blurred by ``feather`` pixels."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(poly) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    m = m.astype(np.float32) / 255
    return cv2.GaussianBlur(m, (0, 0), feather) if feather > 0 else m


def line_mask(curve: np.ndarray, width: float, feather: float = 0.6) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.polylines(m, [np.round(np.asarray(curve) * 16).astype(np.int32)], False, 255,
                  max(1, int(round(width))), cv2.LINE_AA, shift=4)
    m = m.astype(np.float32) / 255
    return cv2.GaussianBlur(m, (0, 0), feather) if feather > 0 else m


def tapered(curve: np.ndarray, w0: float, w1: float, w_mid: float | None = None) -> np.ndarray:
    """Closed outline of a brush stroke along ``curve`` whose width goes w0 -> (w_mid) -> w1."""
    c = np.asarray(curve, np.float64)
    d = np.gradient(c, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    s = np.linspace(0, 1, len(c))[:, None]
    w = (w0 * (1 - s) + w1 * s) if w_mid is None else (
        np.where(s < 0.5, w0 + (w_mid - w0) * np.sin(np.pi * s), w1 + (w_mid - w1) * np.sin(np.pi * s)))
    return np.vstack([c + nrm * w / 2, (c - nrm * w / 2)[::-1]])


def paint(canvas: Image, mask: np.ndarray, colour: np.ndarray | tuple, alpha: float = 1.0) -> None:
    """Composite ``colour`` (RGB or an image) over ``canvas`` through ``mask`` in place."""
    a = np.clip(mask * alpha, 0, 1)[..., None]
    canvas[:] = canvas * (1 - a) + np.asarray(colour, np.float32) * a


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i: i + 2], 16) for i in (1, 3, 5)], np.float32) / 255


def volume(mask: np.ndarray, depth: float = 12.0) -> np.ndarray:
    """0 at a shape's edge rising to 1 inside it: rounds flat fills into volumes."""
    dist = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(dist / depth, 0, 1).astype(np.float32)


def noise(rng: np.random.Generator, scale: float, aspect: tuple[float, float] = (1, 1)) -> np.ndarray:
    """Smooth value noise in -1..1 with features of about ``scale`` pixels."""
    n = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), scale * aspect[0], sigmaY=scale * aspect[1])
    return n / max(float(np.abs(n).max()), 1e-6)


def combed(canvas: Image, a: np.ndarray, b: np.ndarray, clip: np.ndarray, colour: np.ndarray,
           rng: np.random.Generator, count: int = 80, alpha: float = 0.3, width: float = 1.0,
           bend: float = 0.0) -> None:
    """Hair combed from curve ``a`` (e.g. the hairline) to curve ``b`` (e.g. the bun): one strand per pair."""
    ia = np.linspace(0, len(a) - 1, count)
    ib = np.linspace(0, len(b) - 1, count)
    acc = np.zeros((SIZE, SIZE), np.float32)
    for ta, tb in zip(ia, ib, strict=True):
        ta, tb = ta + rng.uniform(-3, 3), tb + rng.uniform(-3, 3)  # irregular, not evenly ribbed
        idx_a, idx_b = np.arange(len(a)), np.arange(len(b))
        s = np.array([np.interp(ta, idx_a, a[:, 0]), np.interp(ta, idx_a, a[:, 1])])
        e = np.array([np.interp(tb, idx_b, b[:, 0]), np.interp(tb, idx_b, b[:, 1])])
        mid = (s + e) / 2 + np.array([-(e - s)[1], (e - s)[0]]) * (bend + rng.normal(0, 0.03))
        acc = np.maximum(acc, line_mask(spline([s, mid, e], n=16), width, 0.35) * rng.uniform(0.15, 1.0))
    paint(canvas, acc * clip, colour, alpha)


def to_uint8(img: Image) -> np.ndarray:
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)

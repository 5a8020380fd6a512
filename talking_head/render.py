"""Renderers turn a framed portrait plus per-frame controls into frames.

``warp`` (built in) moves the jaw, lips, eyelids and head with a landmark-driven
displacement field applied by ``cv2.remap`` inside a soft head mask: every pixel
where the mask is 0 (background, body) is copied unchanged from the portrait.
``sadtalker`` is registered as the place for a neural renderer on a GPU.
"""
from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from registry import Registry
from settings import find_checkpoint

from .drive import Drive
from .enhance import Enhancer, NoEnhancer, StageUnavailable
from .face import (
    BROWS,
    CHIN,
    EYES,
    FACE_OVAL,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    NOSE,
    Face,
)

# Eyelid contours (outer corner -> inner corner) for the blink field.
_UPPER_LIDS = [[33, 246, 161, 160, 159, 158, 157, 173, 133], [263, 466, 388, 387, 386, 385, 384, 398, 362]]
_LOWER_LIDS = [[33, 7, 163, 144, 145, 153, 154, 155, 133], [263, 249, 390, 373, 374, 380, 381, 382, 362]]
# How far each jaw/chin landmark follows the jaw drop (the rest of the oval stays put).
_JAW_FOLLOW = {152: 0.92, 148: 0.9, 377: 0.9, 176: 0.85, 400: 0.85, 149: 0.7, 378: 0.7, 150: 0.5, 379: 0.5,
               136: 0.3, 365: 0.3, 172: 0.12, 397: 0.12, 18: 0.97, 200: 0.95, 199: 0.93, 175: 0.92}
JAW_AMPLITUDE = 0.28  # full jaw drop at the lower lip, in mouth widths ("aa")
CONTROLS = ("jaw", "wide", "round", "blink", "tilt", "nod")


class Renderer(ABC):
    """Makes the frames of one utterance from a framed portrait and its controls."""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here?, reason when not)."""
        return True, ""

    @abstractmethod
    def frames(self, drive: Drive) -> Iterator[np.ndarray]:
        """RGB uint8 frames, one per control frame."""


RENDERERS: Registry[Renderer] = Registry("face renderer")


def _soft_head_mask(face: Face, shape: tuple[int, int]) -> np.ndarray:
    """1 over the head (face, hair, chin), falling smoothly to exactly 0 around it."""
    pts = face.points
    oval = pts[FACE_OVAL]
    hf = face.height
    cx = float(oval[:, 0].mean())
    cy = float(oval[:, 1].mean()) - 0.08 * hf  # hair sits above the oval's centre
    ax = 0.5 * float(oval[:, 0].max() - oval[:, 0].min()) * 1.5
    ay = 0.5 * hf * 1.6
    yy, xx = np.mgrid[0: shape[0], 0: shape[1]].astype(np.float32)
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    t = np.clip((1.0 - r) / 0.3, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no visible edge


class WarpRig:
    """Everything precomputed for one framed portrait: ROI, mask, and basis displacement fields."""

    def __init__(self, still: np.ndarray, face: Face) -> None:
        self.still = still
        self.face = face
        h, w = still.shape[:2]
        full_mask = _soft_head_mask(face, (h, w))
        ys, xs = np.nonzero(full_mask > 0)
        self.y0, self.y1 = int(ys.min()), int(ys.max()) + 1
        self.x0, self.x1 = int(xs.min()), int(xs.max()) + 1
        self.mask = np.ascontiguousarray(full_mask[self.y0: self.y1, self.x0: self.x1])
        rh, rw = self.mask.shape
        gy, gx = np.mgrid[self.y0: self.y1, self.x0: self.x1].astype(np.float32)
        self.gx, self.gy = gx, gy
        p = face.points
        self.hf = face.height
        self.mw = face.mouth_width
        self.centre_x = float((p[MOUTH_LEFT, 0] + p[MOUTH_RIGHT, 0]) / 2)
        self.pivot = p[CHIN] + np.array([0.0, 0.35 * self.hf], np.float32)  # the neck: heads roll about it
        self.lip_deltas = self._lip_deltas()
        fields = [self._rbf_field(self.lip_deltas[k]) for k in ("jaw", "wide", "round")]
        fields.append(self._blink_field())
        rel_x, rel_y = gx - self.pivot[0], gy - self.pivot[1]
        fields.append(np.stack([rel_y, -rel_x], axis=-1))  # d(source)/d(tilt) for a small roll
        fields.append(np.stack([np.zeros_like(gx), -np.full_like(gy, self.hf)], axis=-1))  # nod
        basis = np.stack(fields) * self.mask[None, :, :, None]
        self.basis = np.ascontiguousarray(basis.reshape(len(CONTROLS), -1)).astype(np.float32)
        self.roi_shape = (rh, rw)
        self.still_roi = still[self.y0: self.y1, self.x0: self.x1]
        self.rest_gap = _lip_gap(self.inner_lips(np.zeros(len(CONTROLS), np.float32)))

    # --- basis construction -------------------------------------------------------------------
    def _lip_deltas(self) -> dict[str, dict[int, np.ndarray]]:
        """Forward displacement of control landmarks for each mouth control at full strength."""
        p, m = self.face.points, self.mw
        cx = self.centre_x
        a = JAW_AMPLITUDE * m
        upper = set(LIPS_INNER_UPPER[1:-1] + LIPS_OUTER_UPPER[1:-1])
        lower = set(LIPS_INNER_LOWER[1:-1] + LIPS_OUTER_LOWER[1:-1])
        corners = {MOUTH_LEFT, MOUTH_RIGHT, 78, 308}
        jaw: dict[int, np.ndarray] = {}
        wide: dict[int, np.ndarray] = {}
        rnd: dict[int, np.ndarray] = {}
        for i in upper | lower | corners:
            u = float(np.clip((p[i, 0] - cx) / (m / 2), -1.2, 1.2))  # -1 left corner .. +1 right corner
            taper = max(0.3, 1 - 0.6 * u * u)
            if i in lower:
                jaw[i] = np.array([0, a * taper])
                wide[i] = np.array([0.10 * m * u, -0.035 * m * taper])
                rnd[i] = np.array([-0.13 * m * u, 0.035 * m * taper])
            elif i in upper:
                jaw[i] = np.array([0, -0.06 * a * taper])
                wide[i] = np.array([0.10 * m * u, -0.01 * m])
                rnd[i] = np.array([-0.13 * m * u, -0.025 * m * taper])
            else:
                jaw[i] = np.array([0, 0.3 * a])
                wide[i] = np.array([0.12 * m * np.sign(u), -0.02 * m])
                rnd[i] = np.array([-0.15 * m * np.sign(u), 0.0])
        for i, f in _JAW_FOLLOW.items():
            jaw[i] = np.array([0, f * a])
        return {"jaw": jaw, "wide": wide, "round": rnd}

    def _anchors(self, moving: set[int]) -> np.ndarray:
        """Points that must not move: eyes, brows, nose, the upper face outline, and the neck."""
        p, hf, m = self.face.points, self.hf, self.mw
        idx = [i for i in set(NOSE + BROWS + FACE_OVAL + [j for e in EYES for j in e]) if i not in moving]
        extra = [p[CHIN] + np.array([dx * m, 0.45 * hf]) for dx in (-0.8, 0.0, 0.8)]
        return np.vstack([p[idx], np.array(extra)])

    def _rbf_field(self, deltas: dict[int, np.ndarray]) -> np.ndarray:
        """Backward displacement field (dest -> source offset) interpolating the control deltas."""
        p = self.face.points
        ids = sorted(deltas)
        d = np.array([deltas[i] for i in ids], np.float64)
        # Fitting at the destinations keeps upper and lower lips apart when the mouth opens.
        centres = np.vstack([p[ids] + d, self._anchors(set(ids))])
        values = np.vstack([-d, np.zeros((len(centres) - len(ids), 2))])
        rbf = RBFInterpolator(centres, values, kernel="thin_plate_spline", smoothing=1e-3 * self.hf)
        step = max(1, int(round(self.hf / 40)))  # the field is smooth: evaluate coarse, upsample
        ys = np.arange(self.y0, self.y1, step, dtype=np.float64)
        xs = np.arange(self.x0, self.x1, step, dtype=np.float64)
        gy, gx = np.meshgrid(ys, xs, indexing="ij")
        coarse = rbf(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(len(ys), len(xs), 2)
        rh, rw = self.y1 - self.y0, self.x1 - self.x0
        fine = cv2.resize(coarse.astype(np.float32), (rw, rh), interpolation=cv2.INTER_LINEAR)
        # Fade the mouth fields out well before the mask edge and above the nose.
        return fine

    def _blink_field(self) -> np.ndarray:
        """Backward field that draws each upper lid down to the lower lid (skin above stretches)."""
        p = self.face.points
        field = np.zeros((self.y1 - self.y0, self.x1 - self.x0, 2), np.float32)
        for upper_ids, lower_ids in zip(_UPPER_LIDS, _LOWER_LIDS, strict=True):
            up, lo = p[upper_ids], p[lower_ids]
            order_u, order_l = np.argsort(up[:, 0]), np.argsort(lo[:, 0])
            x_lo, x_hi = float(up[:, 0].min()), float(up[:, 0].max())
            cols = np.arange(self.x0, self.x1, dtype=np.float32)
            y_up = np.interp(cols, up[order_u, 0], up[order_u, 1])
            y_lo = np.interp(cols, lo[order_l, 0], lo[order_l, 1])
            gap = np.clip(y_lo - y_up, 0, None)
            inside = (cols >= x_lo) & (cols <= x_hi)
            gap = np.where(inside, gap, 0.0)
            o = float(gap.max())
            if o <= 0:
                continue
            y_top = y_up - 1.3 * o  # the lid skin below the brow is what covers the eye
            yy = self.gy
            r = (yy - y_top[None, :]) / np.maximum(y_lo - y_top, 1e-3)[None, :]
            r = np.where((yy >= y_top[None, :]) & (yy <= y_lo[None, :] + 0.5), np.clip(r, 0, 1), 0.0)
            field[..., 1] -= (0.97 * gap[None, :] * r).astype(np.float32)
        return field

    # --- per frame ----------------------------------------------------------------------------
    def offsets(self, coefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Absolute source maps for ``cv2.remap`` for one frame's control values."""
        rh, rw = self.roi_shape
        off = (coefs.astype(np.float32) @ self.basis).reshape(rh, rw, 2)
        return self.gx + off[..., 0], self.gy + off[..., 1]

    def inner_lips(self, coefs: np.ndarray) -> np.ndarray:
        """Forward positions of the inner lip contour (upper left->right, then lower right->left)."""
        p = self.face.points
        ids = LIPS_INNER_UPPER + LIPS_INNER_LOWER[::-1]
        pts = p[ids].astype(np.float64).copy()
        for k, name in enumerate(("jaw", "wide", "round")):
            deltas = self.lip_deltas[name]
            pts += coefs[k] * np.array([deltas[i] for i in ids])
        tilt, nod = float(coefs[4]), float(coefs[5])
        rel = pts - self.pivot
        c, s = np.cos(tilt), np.sin(tilt)
        pts = self.pivot + rel @ np.array([[c, s], [-s, c]]) + np.array([0, nod * self.hf])
        return pts


def _lip_gap(lips: np.ndarray) -> float:
    return float(np.max(lips[11:][::-1][:, 1] - lips[:11][:, 1]))


def _paint_mouth(roi: np.ndarray, lips: np.ndarray, origin: tuple[int, int], mw: float, rest_gap: float) -> None:
    """Fill the gap between the parted lips with a dark mouth and a hint of upper teeth.

    Only the opening added to the portrait's own is painted, in proportion to it, so a
    portrait that smiles with its teeth showing keeps them when the mouth is at rest.
    """
    upper = lips[:11]
    gap = _lip_gap(lips)
    strength = float(np.clip((gap - rest_gap - 0.5) / (0.12 * mw), 0.0, 1.0))
    if strength <= 0:
        return
    ox, oy = origin
    shift = 3  # sub-pixel polygon precision
    poly = np.round((lips - [ox, oy]) * (1 << shift)).astype(np.int32)
    h, w = roi.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    cv2.fillPoly(alpha, [poly], 255, lineType=cv2.LINE_AA, shift=shift)
    # upper teeth: a band under the upper lip, thinning towards the corners
    u = np.linspace(-1, 1, len(upper))[:, None]
    teeth_h = min(0.3 * gap, 0.08 * mw) * np.clip(1 - u * u, 0, 1) * np.array([[0, 1]])
    teeth_poly = np.vstack([upper, (upper + teeth_h)[::-1]])
    teeth = np.zeros((h, w), np.uint8)
    cv2.fillPoly(teeth, [np.round((teeth_poly - [ox, oy]) * (1 << shift)).astype(np.int32)], 255,
                 lineType=cv2.LINE_AA, shift=shift)
    a = cv2.GaussianBlur(alpha, (3, 3), 0).astype(np.float32)[..., None] * (strength / 255.0)
    t = teeth.astype(np.float32)[..., None] / 255.0
    mouth = np.array([52, 22, 26], np.float32)
    tooth = np.array([208, 200, 190], np.float32)
    colour = mouth * (1 - t) + tooth * t
    roi[:] = np.clip(roi.astype(np.float32) * (1 - a) + colour * a, 0, 255).astype(np.uint8)


@RENDERERS.register("warp")
class WarpRenderer(Renderer):
    """Landmark-driven warp on CPU: jaw drop, lip spread/rounding, blinks, slight head roll and nod."""

    def __init__(self, still: np.ndarray, face: Face, enhancer: Enhancer | None = None) -> None:
        self.rig = WarpRig(still, face)
        self.enhancer = enhancer or NoEnhancer()

    def frame(self, coefs: np.ndarray) -> np.ndarray:
        """One frame for the control vector ``coefs`` (order: CONTROLS)."""
        rig = self.rig
        mx, my = rig.offsets(coefs)
        roi = cv2.remap(rig.still, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        _paint_mouth(roi, rig.inner_lips(coefs), (rig.x0, rig.y0), rig.mw, rig.rest_gap)
        roi = self.enhancer.enhance(roi, rig.mask)
        out = rig.still.copy()
        # Only the head moves: outside the mask the portrait's own pixels are kept bit for bit.
        keep = rig.mask <= 0
        roi[keep] = rig.still_roi[keep]
        out[rig.y0: rig.y1, rig.x0: rig.x1] = roi
        return out

    def frames(self, drive: Drive) -> Iterator[np.ndarray]:
        coefs = np.stack([drive.jaw, drive.wide, drive.round, drive.blink, drive.tilt, drive.nod], axis=1)
        for c in coefs:
            yield self.frame(c)


class StillRenderer(Renderer):
    """The portrait as is, for every frame: the fallback when no face was found."""

    def __init__(self, still: np.ndarray) -> None:
        self.still = still

    def frames(self, drive: Drive) -> Iterator[np.ndarray]:
        for _ in range(drive.frames):
            yield self.still


@RENDERERS.register("sadtalker")
class SadTalkerRenderer(Renderer):
    """Place for SadTalker (3DMM motion + neural face render); needs a CUDA GPU and its weights."""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
        except ImportError:
            cuda = False
        if not cuda:
            return False, "SadTalker needs a CUDA GPU (this torch is CPU-only)"
        if find_checkpoint("SadTalker") is None:
            return False, "no SadTalker weights: put SadTalker_V0.0.2_256.safetensors etc. in checkpoints/SadTalker/"
        if importlib.util.find_spec("sadtalker") is None:
            return False, "the SadTalker code is not installed (clone it and add it to PYTHONPATH)"
        return False, "the SadTalker adapter is not written yet"

    def __init__(self, still: np.ndarray, face: Face, enhancer: Enhancer | None = None) -> None:
        _, why = self.availability()
        raise StageUnavailable(f"Face renderer 'sadtalker' is unavailable: {why}; use renderer 'warp'.")

    def frames(self, drive: Drive) -> Iterator[np.ndarray]:  # pragma: no cover - never constructed here
        raise StageUnavailable("SadTalker is not available")

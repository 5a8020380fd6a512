"""Face enhancers behind one interface: GFPGAN where it can run, else a light offline sharpen."""
from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod

import cv2
import numpy as np

from registry import Registry
from settings import find_checkpoint

GFPGAN_WEIGHTS = ("GFPGANv1.4.pth", "gfpgan/GFPGANv1.4.pth", "GFPGANv1.3.pth")


class StageUnavailable(RuntimeError):
    """A registered stage that cannot run here; the message says what it needs."""


class Enhancer(ABC):
    """Improves the rendered face region of a frame; pixels where ``weight`` is 0 must not change."""

    name = ""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here?, reason when not)."""
        return True, ""

    @abstractmethod
    def enhance(self, roi: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Return the enhanced RGB uint8 ``roi``; ``weight`` (0..1, HxW) says where it may change."""


ENHANCERS: Registry[Enhancer] = Registry("face enhancer")


def _blend(orig: np.ndarray, new: np.ndarray, weight: np.ndarray) -> np.ndarray:
    w = weight[..., None]
    out = orig.astype(np.float32) * (1 - w) + new.astype(np.float32) * w
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@ENHANCERS.register("none")
class NoEnhancer(Enhancer):
    """Leaves frames as rendered."""

    name = "none"

    def enhance(self, roi: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return roi


@ENHANCERS.register("sharpen")
class SharpenEnhancer(Enhancer):
    """A light unsharp mask: restores some crispness that bilinear warping softens."""

    name = "sharpen"

    def __init__(self, amount: float = 0.45, sigma: float = 1.0) -> None:
        self.amount, self.sigma = amount, sigma

    def enhance(self, roi: np.ndarray, weight: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(roi, (0, 0), self.sigma)
        sharp = cv2.addWeighted(roi, 1 + self.amount, blurred, -self.amount, 0)
        return _blend(roi, sharp, weight)


def _gfpgan_weights() -> str | None:
    for name in GFPGAN_WEIGHTS:
        found = find_checkpoint(name)
        if found is not None and found.is_file():
            return str(found)
    return None


@ENHANCERS.register("gfpgan")
class GFPGANEnhancer(Enhancer):
    """GFPGAN face restoration: needs the ``gfpgan`` package importable and its weights in checkpoints/."""

    name = "gfpgan"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("gfpgan") is None:
            return False, ("gfpgan is not installed (it cannot import on CPU torch here); "
                           "install gfpgan with a matching torchvision on a GPU machine")
        if _gfpgan_weights() is None:
            return False, f"no GFPGAN weights: put {GFPGAN_WEIGHTS[0]} in checkpoints/"
        try:
            import gfpgan  # noqa: F401
        except Exception as exc:  # basicsr/torchvision mismatches raise many kinds of errors
            return False, f"gfpgan does not import ({type(exc).__name__}: {exc})"
        return True, ""

    def __init__(self) -> None:
        ok, why = self.availability()
        if not ok:
            raise StageUnavailable(f"Face enhancer 'gfpgan' is unavailable: {why}.")
        from gfpgan import GFPGANer

        self._restorer = GFPGANer(model_path=_gfpgan_weights(), upscale=1, arch="clean",
                                  channel_multiplier=2, bg_upsampler=None)

    def enhance(self, roi: np.ndarray, weight: np.ndarray) -> np.ndarray:
        bgr = cv2.cvtColor(roi, cv2.COLOR_RGB2BGR)
        _, _, restored = self._restorer.enhance(bgr, has_aligned=False, only_center_face=True, paste_back=True)
        if restored is None:
            return roi
        return _blend(roi, cv2.cvtColor(restored, cv2.COLOR_BGR2RGB), weight)


AUTO_ORDER = ("gfpgan", "sharpen")


def create_enhancer(name: str = "auto") -> Enhancer:
    """Build the named enhancer; "auto" takes the best available (GFPGAN, else sharpen)."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            try:
                return ENHANCERS.create(candidate)
            except StageUnavailable:
                continue  # fall through to the next best
        return ENHANCERS.create("none")
    return ENHANCERS.create(name)

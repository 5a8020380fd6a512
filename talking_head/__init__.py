"""The talking head: a portrait speaks the answer, rendered to MP4 on a CPU.

Data path: portrait -> face landmarks (cached) -> framed still + warp rig;
speech -> per-frame controls (loudness, vowels, blinks, sway) -> frames -> ffmpeg.
"""
from __future__ import annotations

import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .drive import FPS, Drive, make_drive
from .enhance import ENHANCERS, Enhancer, StageUnavailable, create_enhancer
from .face import Face, analyse_face
from .render import RENDERERS, Renderer, StillRenderer, WarpRenderer
from .video import MediaError, load_audio, probe, write_video

__all__ = [
    "ENHANCERS", "RENDERERS", "FPS", "Drive", "Enhancer", "Face", "MediaError", "Renderer", "StageUnavailable",
    "PortraitError", "TalkingHead", "VideoResult", "WarpRenderer", "load_portrait", "make_drive", "probe", "render_talking_head",
]

SIZES = (256, 512)
FRAMING = 2.7  # crop side in face heights: head and shoulders


class PortraitError(ValueError):
    """A portrait that cannot be read; the message names the fix."""


@dataclass
class VideoResult:
    """One rendered video."""

    path: Path
    duration_s: float
    face_found: bool
    frames: int
    size: int = 256
    renderer: str = "warp"
    enhancer: str = "none"
    seconds: float = 0.0  # wall time spent rendering
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def load_portrait(portrait: Path | str | np.ndarray) -> np.ndarray:
    """An RGB uint8 image from a file path or an array (gray, RGB or RGBA)."""
    if isinstance(portrait, np.ndarray):
        img = np.asarray(portrait)
    else:
        path = Path(portrait)
        if not path.is_file():
            raise PortraitError(f"Portrait {path} does not exist; pass a PNG or JPEG image of the character.")
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGBA"))
        except (OSError, ValueError) as exc:
            raise PortraitError(f"Cannot read {path} as an image ({exc}); use a PNG or JPEG file.") from None
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 32:
        raise PortraitError(f"A portrait must be an image of at least 32x32 pixels, not shape {img.shape}.")
    if img.dtype != np.uint8:
        scale = 255.0 if img.max() <= 1.0 else 1.0
        img = np.clip(img.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.shape[2] == 4:  # composite transparency onto white, like a page would show it
        a = img[..., 3:4].astype(np.float32) / 255
        img = (img[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def frame_portrait(rgb: np.ndarray, face: Face | None, size: int) -> tuple[np.ndarray, Face | None]:
    """Square head-and-shoulders crop around the face, resized to ``size``; centre crop without a face."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    if face is not None:
        side = int(min(side, max(FRAMING * face.height, 64)))
        cx = float(face.points[:, 0].mean())
        cy = float(face.points[:, 1].mean()) + 0.3 * face.height  # leave room for the shoulders
    else:
        cx, cy = w / 2, h / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    crop = rgb[y0: y0 + side, x0: x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    still = cv2.resize(crop, (size, size), interpolation=interp)
    framed = face.transformed(size / side, (x0, y0)) if face is not None else None
    return np.ascontiguousarray(still), framed


class TalkingHead:
    """One portrait, analysed once, that speaks sentence after sentence."""

    def __init__(self, portrait: Path | str | np.ndarray, size: int = 256, renderer: str = "warp",
                 enhancer: str = "auto") -> None:
        if size not in SIZES:
            raise ValueError(f"Video size {size} is not supported; use one of {SIZES}.")
        self.size = size
        self.image = load_portrait(portrait)
        self.face = analyse_face(self.image)
        self.still, self.framed_face = frame_portrait(self.image, self.face, size)
        self.enhancer = create_enhancer(enhancer)
        self.enhancer_name = getattr(self.enhancer, "name", enhancer)
        self.note = ""
        self.renderer_name = renderer
        if self.framed_face is None:
            self.renderer: Renderer = StillRenderer(self.still)
            self.renderer_name = "still"
            self.note = "no face found in the portrait: still image with the audio"
        else:
            self.renderer = RENDERERS.create(renderer, still=self.still, face=self.framed_face,
                                             enhancer=self.enhancer)
        self._clock = 0.0  # seconds spoken so far: blinks and sway continue across sentences
        self._seed = zlib.crc32(self.still.tobytes()[:65536])

    @property
    def face_found(self) -> bool:
        return self.framed_face is not None

    @property
    def head_mask(self) -> np.ndarray:
        """(size, size) float mask: > 0 where the renderer may change pixels."""
        mask = np.zeros(self.still.shape[:2], np.float32)
        rig = getattr(self.renderer, "rig", None)
        if rig is not None:
            mask[rig.y0: rig.y1, rig.x0: rig.x1] = rig.mask
        return mask

    def drive(self, audio: Path | str | tuple[np.ndarray, int],
              lip_closures: list[tuple[float, float]] | None = None) -> tuple[Drive, np.ndarray, int]:
        """Controls for the speech, plus the decoded samples and their rate."""
        samples, sr = load_audio(audio)
        if samples.size == 0:
            raise MediaError("The audio is empty; pass the synthesized speech of the sentence.")
        drv = make_drive(samples, sr, t0=self._clock, seed=self._seed + int(self._clock * 1000),
                         lip_closures=lip_closures)
        return drv, samples, sr

    def render(self, audio: Path | str | tuple[np.ndarray, int], out: Path | str,
               subtitles_vtt: Path | str | None = None, burn_subtitles: bool = False,
               lip_closures: list[tuple[float, float]] | None = None) -> VideoResult:
        """Render one utterance (e.g. one sentence) to ``out`` as MP4."""
        t_start = time.perf_counter()
        drv, samples, sr = self.drive(audio, lip_closures)
        subs = Path(subtitles_vtt) if subtitles_vtt else None
        if subs is not None and not subs.is_file():
            raise MediaError(f"Subtitle file {subs} does not exist; pass a WebVTT (.vtt) or SRT file.")
        path = write_video(self.renderer.frames(drv), (self.size, self.size), samples, sr, Path(out), subs,
                           burn_subtitles)
        self._clock += drv.frames / FPS
        n_samples = samples.shape[0] if samples.ndim > 1 and samples.shape[0] > samples.shape[1] else (
            samples.shape[-1])
        return VideoResult(path, n_samples / sr, self.face_found, drv.frames, self.size, self.renderer_name,
                           self.enhancer_name, time.perf_counter() - t_start, self.note)


def render_talking_head(portrait: Path | str | np.ndarray, audio: Path | str | tuple[np.ndarray, int],
                        out: Path | str, size: int = 256, subtitles_vtt: Path | str | None = None,
                        burn_subtitles: bool = False, renderer: str = "warp",
                        enhancer: str = "auto") -> VideoResult:
    """Render ``portrait`` speaking ``audio`` to an MP4 at ``out`` (still image if no face is found)."""
    head = TalkingHead(portrait, size=size, renderer=renderer, enhancer=enhancer)
    if not head.face_found:
        print(f"talking_head: {head.note}.", file=sys.stderr)
    return head.render(audio, out, subtitles_vtt=subtitles_vtt, burn_subtitles=burn_subtitles)


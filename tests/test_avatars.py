"""The shipped portraits (avatars/*.png, painted by avatars/make_avatars.py) are faces the talking head can move."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import talking_head as th
from talking_head.face import FOREHEAD, detect_face
from talking_head.video import read_frames

REPO = Path(__file__).resolve().parent.parent
AVATARS = ["daiyu.png", "elizabeth.png"]


def _rgb(name: str) -> np.ndarray:
    return cv2.imread(str(REPO / "avatars" / name))[..., ::-1].copy()


@pytest.mark.parametrize("avatar", AVATARS)
def test_portrait_has_a_face_with_closed_lips_and_open_eyes(avatar: str) -> None:
    img = _rgb(avatar)
    assert img.shape == (512, 512, 3)
    face = detect_face(img)
    assert face is not None
    assert 0.25 < face.height / 512 < 0.4  # a head-and-shoulders bust, not a tiny or cropped face
    # lips closed at rest (no teeth showing), so every opening in a video is the talking head's
    assert face.mouth_opening() < 0.02
    assert face.eye_opening() > 0.04  # eyes open, so blinks show


@pytest.mark.parametrize("avatar", AVATARS)
def test_hair_above_the_forehead_is_dark_like_the_characters(avatar: str) -> None:
    """Both characters have black or dark-brown hair (the NASA photo the face comes from is blond)."""
    img = _rgb(avatar).astype(np.float32) / 255
    face = detect_face(_rgb(avatar))
    x, y = face.points[FOREHEAD]
    h = face.height
    patch = img[int(y - 0.4 * h): int(y - 0.3 * h), int(x - 0.1 * h): int(x + 0.1 * h)]
    assert patch.mean() < 0.3


def _bursts_then_silence(sr: int = 16000) -> tuple[np.ndarray, int]:
    """Four seconds of loud syllable-like tone bursts, then two seconds of silence."""
    t = np.arange(sr * 4) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2.5 * t) > 0)
    return np.concatenate([tone, np.zeros(sr * 2)]).astype(np.float32), sr


@pytest.mark.parametrize("avatar", AVATARS)
def test_rendered_clip_opens_the_mouth_blinks_and_keeps_the_drawing_still(avatar: str, tmp_path: Path) -> None:
    head = th.TalkingHead(REPO / "avatars" / avatar, size=256, enhancer="none")
    audio = _bursts_then_silence()
    controls, _, _ = head.drive(audio)
    result = head.render(audio, tmp_path / "clip.mp4")
    frames = read_frames(result.path, 256)
    assert len(frames) == controls.frames

    rest = head.framed_face
    loud = int(np.argmax(controls.jaw))
    quiet = len(frames) - 5  # inside the final silence
    opened = detect_face(frames[loud])
    closed = detect_face(frames[quiet])
    assert opened is not None and closed is not None  # FaceMesh still finds the painted face in the video
    assert opened.mouth_opening() > closed.mouth_opening() + 0.04
    assert closed.mouth_opening() < 0.02

    # the mouth region visibly changes between the loud and the silent frame
    p = rest.points[[61, 291, 13, 14]]
    (x0, y0), (x1, y1) = (p.min(0) - 4).astype(int), (p.max(0) + 12).astype(int)
    diff = np.abs(frames[loud][y0:y1, x0:x1].astype(int) - frames[quiet][y0:y1, x0:x1]).mean()
    assert diff > 12

    blink = int(np.argmax(controls.blink))
    assert controls.blink[blink] > 0.9  # six seconds hold at least one blink (every 2-6 s)
    blinked = detect_face(frames[blink])
    assert blinked is not None and blinked.eye_opening() < 0.6 * rest.eye_opening()

    # outside the head (dress, background, hair ornaments beyond the mask) nothing moves beyond x264 noise
    outside = head.head_mask <= 0
    drift = np.abs(frames.astype(int) - frames[quiet]).max(axis=0).max(axis=-1)
    assert np.percentile(drift[outside], 99) < 10


@pytest.mark.slow
@pytest.mark.parametrize("name", ["daiyu", "elizabeth"])
def test_make_avatars_reproduces_the_shipped_portrait(name: str) -> None:
    """The PNGs are what the script paints from package data (skimage's photo), up to float noise."""
    sys.path.insert(0, str(REPO / "avatars"))
    import make_avatars

    painted = make_avatars.RECIPES[name](np.random.default_rng(14))
    shipped = _rgb(f"{name}.png")
    assert np.abs(painted.astype(int) - shipped).mean() < 1.0

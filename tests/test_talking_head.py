"""The talking head on a real portrait (skimage astronaut, public domain) and real speech (espeak-ng)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import talking_head as th
from talking_head import drive as drv
from talking_head.enhance import ENHANCERS, StageUnavailable, create_enhancer
from talking_head.face import detect_face
from talking_head.render import RENDERERS
from talking_head.video import probe, read_frames

REPO = Path(__file__).resolve().parent.parent
SENTENCE = "Good day! You find me between a walk and a book. What would you like to talk of?"


@pytest.fixture(scope="session")
def portrait(tmp_path_factory: pytest.TempPathFactory) -> Path:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    path = tmp_path_factory.mktemp("portrait") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real synthesized speech with pauses between its sentences."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: apt-get install -y espeak-ng")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-gb", "-w", str(path), SENTENCE], check=True)
    return path


def _speech_seconds(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def test_video_has_h264_and_aac_tracks_of_the_speech_length(portrait: Path, speech: Path, tmp_path: Path) -> None:
    result = th.render_talking_head(portrait, speech, tmp_path / "out.mp4", size=256)
    info = probe(result.path)
    seconds = _speech_seconds(speech)
    assert result.face_found
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == (256, 256)
    assert info.fps == pytest.approx(25)
    assert info.video_s == pytest.approx(seconds, abs=0.1)
    assert info.audio_s == pytest.approx(seconds, abs=0.1)
    assert result.frames == int(np.ceil(seconds * 25))


def test_pixels_outside_the_head_never_change(portrait: Path, speech: Path) -> None:
    head = th.TalkingHead(portrait, size=256, enhancer="sharpen")
    controls, _, _ = head.drive(speech)
    outside = head.head_mask <= 0
    assert 0.3 < outside.mean() < 0.95  # the mask is the head, not the whole picture or nothing
    moved = 0
    for frame in head.renderer.frames(controls):
        assert np.array_equal(frame[outside], head.still[outside])
        moved += int(np.abs(frame.astype(int) - head.still).max() > 20)
    assert moved > controls.frames // 2  # and inside the head things do move


def test_mouth_controls_close_in_silence_and_blinks_happen() -> None:
    sr = 16000
    t = np.arange(sr * 6) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    silence = np.zeros(sr * 2)
    controls = drv.make_drive(np.concatenate([tone, silence]), sr)
    assert controls.frames == 200
    assert controls.jaw[-25:].max() < 0.02  # the last second is silent: lips closed
    assert controls.jaw[:150].max() > 0.4
    assert controls.blink.max() == pytest.approx(1.0) and (controls.blink > 0).mean() < 0.2
    assert np.abs(np.rad2deg(controls.tilt)).max() < 2.0  # only a slight sway


@pytest.mark.slow
def test_mouth_opening_measured_on_the_video_follows_loudness(portrait: Path, speech: Path, tmp_path: Path) -> None:
    result = th.render_talking_head(portrait, speech, tmp_path / "out.mp4", size=256)
    frames = read_frames(result.path, 256)
    opening = []
    for frame in frames:
        face = detect_face(frame)  # re-detect the landmarks on the encoded output
        opening.append(face.mouth_opening() if face else np.nan)
    opening = np.array(opening)
    found = ~np.isnan(opening)
    assert found.mean() > 0.9
    samples, sr = sf.read(str(speech), dtype="float32")
    loud = drv.normalised_loudness(drv.frame_loudness_db(drv.to_mono(samples, sr), len(frames)))
    corr = float(np.corrcoef(opening[found], loud[found])[0, 1])
    print(f"mouth opening vs loudness correlation: {corr:.3f}")
    assert corr >= 0.6


def test_no_face_falls_back_to_the_still_image(speech: Path, tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:300, 0:400]
    landscape = np.stack([xx * 255 // 400, yy * 255 // 300, np.full_like(xx, 120)], -1).astype(np.uint8)
    result = th.render_talking_head(landscape, speech, tmp_path / "still.mp4", size=256)
    assert result.face_found is False
    info = probe(result.path)
    assert info.audio_codec == "aac" and info.video_s == pytest.approx(_speech_seconds(speech), abs=0.1)
    frames = read_frames(result.path, 256)
    # a still picture: frames differ only by x264 noise
    assert np.abs(frames.astype(int) - frames[0]).mean(axis=(1, 2, 3)).max() < 1.0


def test_landmarks_are_cached_per_image(portrait: Path, zhiyin_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = th.TalkingHead(portrait)
    assert list((zhiyin_home / ".cache" / "talking_head" / "landmarks").glob("*.npy"))

    def no_detection(_rgb: np.ndarray) -> None:
        raise AssertionError("the landmarks should have come from the cache")

    monkeypatch.setattr("talking_head.face.detect_face", no_detection)
    second = th.TalkingHead(portrait)
    assert np.array_equal(first.framed_face.points, second.framed_face.points)


def test_soft_and_burned_subtitles(portrait: Path, speech: Path, tmp_path: Path) -> None:
    vtt = tmp_path / "subs.vtt"
    vtt.write_text("WEBVTT\n\n00:00.000 --> 00:04.000\nGood day! You find me between a walk and a book.\n")
    soft = th.render_talking_head(portrait, speech, tmp_path / "soft.mp4", subtitles_vtt=vtt, enhancer="none")
    assert probe(soft.path).subtitle_codec == "mov_text"
    burned = th.render_talking_head(portrait, speech, tmp_path / "burned.mp4", subtitles_vtt=vtt,
                                    burn_subtitles=True, enhancer="none")
    assert probe(burned.path).subtitle_codec is None
    a, b = read_frames(soft.path, 256)[10], read_frames(burned.path, 256)[10]
    assert np.abs(a[-60:].astype(int) - b[-60:]).mean() > 2  # text drawn near the bottom


def test_enhancer_and_renderer_registries_say_why_something_is_unavailable() -> None:
    assert {"gfpgan", "sharpen", "none"} <= set(ENHANCERS)
    assert {"warp", "sadtalker"} <= set(RENDERERS)
    with pytest.raises(StageUnavailable, match="gfpgan"):
        ENHANCERS.create("gfpgan")  # no weights in checkpoints/ here
    assert create_enhancer("auto").name == "sharpen"
    with pytest.raises(StageUnavailable, match="GPU"):
        RENDERERS.create("sadtalker", still=None, face=None)


def test_cli_json_and_clear_errors(portrait: Path, speech: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    res = subprocess.run([sys.executable, "-m", "talking_head", str(portrait), str(speech), "--out", str(out),
                          "--json"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["face_found"] is True and Path(payload["path"]).is_file()
    bad = subprocess.run([sys.executable, "-m", "talking_head", str(tmp_path / "missing.png"), str(speech),
                          "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr and "Traceback" not in bad.stderr

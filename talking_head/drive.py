"""From speech to per-frame face controls: jaw opening, lip width/rounding, blinks, head sway.

Vowel weights follow uLipSync's MFCC template matching (as packaged by ``pylipsync``),
re-implemented here with numpy over all frames at once: pylipsync's own per-frame
Python loop took ~7 CPU-seconds per second of audio, far beyond our budget.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from scipy.signal import lfilter, resample_poly

FPS = 25
ANALYSIS_SR = 16000
VOWELS = ("aa", "ee", "ih", "oh", "ou")
# How far each vowel opens the jaw, widens and rounds the lips (0..1), from viseme charts.
_OPEN = np.array([1.0, 0.55, 0.5, 0.75, 0.45], np.float32)
_WIDE = np.array([0.1, 1.0, 0.7, 0.0, 0.0], np.float32)
_ROUND = np.array([0.0, 0.0, 0.0, 0.7, 1.0], np.float32)


@dataclass
class Drive:
    """Per-frame controls, each an array of length ``frames``."""

    loudness: np.ndarray  # 0..1, speech loudness (gated: 0 in silence)
    jaw: np.ndarray  # 0..1 jaw/lip opening
    wide: np.ndarray  # 0..1 lip spreading (ee, ih)
    round: np.ndarray  # 0..1 lip rounding (oh, ou)
    blink: np.ndarray  # 0..1 eyelid closure
    tilt: np.ndarray  # head roll in radians
    nod: np.ndarray  # head lift in units of face height (positive = down)

    @property
    def frames(self) -> int:
        return len(self.jaw)


def to_mono(samples: np.ndarray, sr: int, target_sr: int = ANALYSIS_SR) -> np.ndarray:
    """Mono float32 at ``target_sr``."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        # soundfile gives (frames, channels); accept (channels, frames) too
        x = x.mean(axis=1) if x.shape[0] > x.shape[1] else x.mean(axis=0)
    if sr != target_sr:
        g = np.gcd(int(sr), int(target_sr))
        x = resample_poly(x, target_sr // g, int(sr) // g).astype(np.float32)
    return x


def frame_count(n_samples: int, sr: int, fps: int = FPS) -> int:
    """Frames that cover the audio (the last partial frame included)."""
    return max(1, int(np.ceil(n_samples / sr * fps - 1e-6)))


def _frames(x: np.ndarray, n: int, win: int, hop: int) -> np.ndarray:
    """(n, win) windows centred on each video frame, reflect-padded at the ends."""
    pad = win
    xp = np.pad(x, (pad, pad + win), mode="reflect" if len(x) > win + 1 else "constant")
    starts = (np.arange(n) * hop + hop // 2 - win // 2 + pad).clip(0, len(xp) - win)
    idx = starts[:, None] + np.arange(win)[None, :]
    return xp[idx]


def frame_loudness_db(x: np.ndarray, n: int, sr: int = ANALYSIS_SR, fps: int = FPS) -> np.ndarray:
    """RMS level in dBFS of a 50 ms window centred on each video frame."""
    hop = sr / fps
    win = int(0.05 * sr)
    fr = _frames(x, n, win, int(round(hop)))
    rms = np.sqrt(np.mean(fr.astype(np.float64) ** 2, axis=1))
    return (20 * np.log10(rms + 1e-9)).astype(np.float32)


def normalised_loudness(db: np.ndarray, floor_db: float = 32.0) -> np.ndarray:
    """Loudness in 0..1 relative to the utterance's own loud level; 0 below the silence gate."""
    if not len(db):
        return db
    ref = float(np.percentile(db, 95))
    ref = max(ref, -45.0)  # an all-quiet clip stays closed instead of being blown up
    loud = (db - (ref - floor_db)) / floor_db
    return np.clip(loud, 0.0, 1.0).astype(np.float32)


def _smooth(v: np.ndarray, attack: float, release: float) -> np.ndarray:
    """One-pole follower: opens quickly (attack) and closes a little slower (release)."""
    out = np.empty_like(v)
    state = 0.0
    for i, x in enumerate(v):
        a = attack if x > state else release
        state = state + a * (x - state)
        out[i] = state
    return out


@lru_cache(maxsize=1)
def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """pylipsync's packaged MFCC vowel templates (MIT), or None when it is not installed."""
    spec = find_spec("pylipsync")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "phonemes" / "template.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    names = list(data["phonemes"])
    tmpl = np.array([np.mean(data["phonemes"][k], axis=0) for k in names], np.float32)
    means = np.array(data["normalization"]["means"], np.float32)
    stds = np.array(data["normalization"]["std_devs"], np.float32)
    return tmpl, means, stds, names


@lru_cache(maxsize=4)
def _mfcc_matrices(n_fft: int, sr: int, mel: int = 26, n_mfcc: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """uLipSync's mel filter bank (on the magnitude spectrum) and DCT-II as matrices."""
    f_max = sr / 2
    n_max = n_fft // 2
    df = f_max / n_max
    to_mel = lambda hz: 1127.0 * np.log(hz / 700.0 + 1.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (np.exp(m / 1127.0) - 1.0)  # noqa: E731
    d_mel = to_mel(f_max) / (mel + 1)
    f_pts = to_hz(np.arange(mel + 2) * d_mel)
    freqs = np.arange(n_fft) * df
    bank = np.zeros((mel, n_fft), np.float32)
    for n in range(mel):
        lo, ce, hi = f_pts[n], f_pts[n + 1], f_pts[n + 2]
        up = (freqs >= lo) & (freqs < ce)
        dn = (freqs >= ce) & (freqs <= hi)
        bank[n, up] = (freqs[up] - lo) / (ce - lo)
        bank[n, dn] = (hi - freqs[dn]) / (hi - ce)
        bank[n] /= (hi - lo) * 0.5
    i = np.arange(1, n_mfcc + 1)[:, None]
    j = np.arange(mel)[None, :]
    dct = np.cos((j + 0.5) * i * np.pi / mel).astype(np.float32)
    return bank, dct


def vowel_weights(x: np.ndarray, n: int, sr: int = ANALYSIS_SR, fps: int = FPS) -> np.ndarray:
    """(n, 5) weights of aa/ee/ih/oh/ou per frame (rows sum to 1 or 0); uniform if unavailable."""
    tm = _templates()
    if tm is None:
        return np.full((n, len(VOWELS)), 1.0 / len(VOWELS), np.float32)
    tmpl, means, stds, names = tm
    win = int(0.064 * sr)
    fr = _frames(x, n, win, int(round(sr / fps))).astype(np.float32)
    # uLipSync: low-pass (500 Hz transition), pre-emphasis, Hamming, peak-normalise, zero-pad, |FFT|
    cutoff = (sr / 2 - 500) / sr
    taps = int(round(3.1 / (500 / sr))) | 1
    k = np.arange(taps) - (taps - 1) / 2
    fir = (2 * cutoff * np.sinc(2 * cutoff * k)).astype(np.float32)
    fr = lfilter(fir, 1.0, fr, axis=1).astype(np.float32)
    fr[:, 1:] -= 0.97 * fr[:, :-1].copy()
    fr *= np.hamming(win).astype(np.float32)
    fr /= np.maximum(np.abs(fr).max(axis=1, keepdims=True), 1e-9)
    padded = np.zeros((n, 2 * win), np.float32)
    padded[:, win // 2: win // 2 + win] = fr
    spec = np.abs(np.fft.fft(padded, axis=1)).astype(np.float32)
    bank, dct = _mfcc_matrices(2 * win, sr)
    mel_db = 10 * np.log10(np.maximum(spec @ bank.T, 1e-10))
    mfcc = mel_db @ dct.T
    z = (mfcc - means) / stds
    zt = (tmpl - means) / stds
    cos = (z @ zt.T) / (np.linalg.norm(z, axis=1, keepdims=True) * np.linalg.norm(zt, axis=1) + 1e-9)
    score = np.maximum(cos, 0.0) ** 100  # uLipSync's sharpening of cosine similarity
    cols = [names.index(v) for v in VOWELS if v in names]
    w = score[:, cols]
    total = w.sum(axis=1, keepdims=True)
    return np.where(total > 0, w / np.maximum(total, 1e-12), 1.0 / len(VOWELS)).astype(np.float32)


def blink_track(n: int, rng: np.random.Generator, fps: int = FPS) -> np.ndarray:
    """Natural blinks: every 2-6 s, ~200 ms each, with a fast close and slower reopening."""
    track = np.zeros(n, np.float32)
    profile = np.array([0.45, 0.95, 1.0, 0.65, 0.25], np.float32)
    t = rng.uniform(0.6, 2.5)
    while t * fps < n:
        i = int(t * fps)
        seg = profile[: max(0, min(len(profile), n - i))]
        track[i: i + len(seg)] = np.maximum(track[i: i + len(seg)], seg)
        t += rng.uniform(2.0, 6.0)
    return track


def make_drive(samples: np.ndarray, sr: int, *, t0: float = 0.0, seed: int = 0,
               lip_closures: list[tuple[float, float]] | None = None) -> Drive:
    """Face controls for each 25 fps frame of the speech ``samples`` (any rate, mono or not)."""
    x = to_mono(samples, sr)
    n = frame_count(len(x), ANALYSIS_SR)
    db = frame_loudness_db(x, n)
    loud = normalised_loudness(db)
    vw = vowel_weights(x, n)
    opening = loud * (0.55 + 0.45 * (vw @ _OPEN))
    jaw = _smooth(opening, attack=0.75, release=0.55)
    wide = _smooth(loud * (vw @ _WIDE), 0.6, 0.5)
    rnd = _smooth(loud * (vw @ _ROUND), 0.6, 0.5)
    if lip_closures:
        # m/b/p: lips meet for the timed closure even if the envelope is still high
        t = np.arange(n) / FPS
        for start, end in lip_closures:
            closed = (t >= start - 0.5 / FPS) & (t <= end + 0.5 / FPS)
            jaw[closed] *= 0.05
    rng = np.random.default_rng(seed)
    blink = blink_track(n, rng)
    t = t0 + np.arange(n) / FPS
    phase = rng.uniform(0, 2 * np.pi, 2)
    activity = _smooth(loud, 0.15, 0.05)  # slow speech activity: the head moves more while talking
    tilt = np.deg2rad(1.3) * (0.6 * np.sin(2 * np.pi * 0.19 * t + phase[0])
                              + 0.4 * np.sin(2 * np.pi * 0.31 * t + phase[1])) * (0.4 + 0.6 * activity)
    nod = 0.012 * (_smooth(loud, 0.2, 0.1) - 0.5 * activity)
    return Drive(loud, jaw.astype(np.float32), wide.astype(np.float32), rnd.astype(np.float32), blink,
                 tilt.astype(np.float32), nod.astype(np.float32))

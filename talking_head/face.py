"""Find a face and its 478 MediaPipe FaceMesh landmarks once per image, cached by pixel hash."""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from settings import paths

# MediaPipe FaceMesh landmark indices (canonical face model topology).
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# Eyes as (outer corner, inner corner, upper-lid middle, lower-lid middle), image-left eye first.
EYES = [(33, 133, 159, 145), (263, 362, 386, 374)]
BROWS = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
NOSE = [1, 2, 4, 5, 6, 98, 164, 168, 195, 197, 327]
FOREHEAD, CHIN, MOUTH_LEFT, MOUTH_RIGHT = 10, 152, 61, 291
UPPER_LIP_MID, LOWER_LIP_MID = 13, 14

_CACHE_VERSION = "facemesh-0.10.21-v1"
_lock = threading.Lock()
_mesh = None


@dataclass(frozen=True)
class Face:
    """Landmarks of one face in pixel coordinates of the image they were found in."""

    points: np.ndarray  # (478, 2) float32, x, y in pixels

    @property
    def height(self) -> float:
        """Forehead-to-chin distance in pixels: the face's scale."""
        return float(np.linalg.norm(self.points[CHIN] - self.points[FOREHEAD]))

    @property
    def mouth_width(self) -> float:
        return float(np.linalg.norm(self.points[MOUTH_RIGHT] - self.points[MOUTH_LEFT]))

    def mouth_opening(self) -> float:
        """Gap between the inner lips at the middle, as a fraction of the face height."""
        gap = float(np.linalg.norm(self.points[LOWER_LIP_MID] - self.points[UPPER_LIP_MID]))
        return gap / max(self.height, 1e-6)

    def eye_opening(self) -> float:
        """Mean lid gap of both eyes, as a fraction of the face height."""
        gaps = [np.linalg.norm(self.points[lo] - self.points[up]) for _, _, up, lo in EYES]
        return float(np.mean(gaps)) / max(self.height, 1e-6)

    def transformed(self, scale: float, offset: tuple[float, float]) -> Face:
        """The same landmarks after cropping at ``offset`` and resizing by ``scale``."""
        shifted = (self.points - np.asarray(offset, np.float32)) * scale
        return Face(shifted.astype(np.float32))


def _facemesh():  # noqa: ANN202 - mediapipe has no type hints
    """One FaceMesh instance per process (loading the graph costs ~0.1 s)."""
    global _mesh
    if _mesh is None:
        # mediapipe/TFLite log through absl to stderr; keep our CLI's stderr readable.
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import mediapipe as mp

        _mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.4
        )
    return _mesh


def detect_face(rgb: np.ndarray) -> Face | None:
    """Run FaceMesh on an RGB uint8 image; None when no face is found. Not cached."""
    h, w = rgb.shape[:2]
    with _lock:  # FaceMesh graphs are not thread-safe
        result = _facemesh().process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
        return None
    lm = result.multi_face_landmarks[0].landmark
    pts = np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float32)
    return Face(pts)


def image_key(rgb: np.ndarray) -> str:
    """A content hash of the pixels (and shape), so a renamed file still hits the cache."""
    digest = hashlib.sha256(f"{rgb.shape}{_CACHE_VERSION}".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()[:32]


def cache_dir() -> Path:
    return paths().cache / "talking_head" / "landmarks"


def analyse_face(rgb: np.ndarray) -> Face | None:
    """Landmarks of the face in ``rgb``, read from the cache or detected once and cached."""
    path = cache_dir() / f"{image_key(rgb)}.npy"
    if path.is_file():
        try:
            pts = np.load(path)
            return Face(pts.astype(np.float32)) if pts.size else None
        except (OSError, ValueError):
            pass  # a damaged cache entry is simply recomputed
    face = detect_face(rgb)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, face.points if face is not None else np.zeros((0, 2), np.float32))
    os.replace(tmp, path)
    if face is None:
        print("talking_head: no face found in the portrait; the video will show the still image.",
              file=sys.stderr)
    return face

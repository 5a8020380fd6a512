"""Paint the two character portraits around one public-domain face: python avatars/make_avatars.py [daiyu|elizabeth]

The face (eyes, nose, mouth, chin) comes from skimage.data.astronaut() (NASA, public domain) so that
FaceMesh finds it and the talking head can animate it; hair, dress, background and the painted look are
drawn in code (qing.py, regency.py). The random numbers are seeded, so a run repeats itself.
See avatars/LICENSE.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from photo_face import detect_face  # noqa: E402
from qing import daiyu  # noqa: E402
from regency import elizabeth  # noqa: E402

RECIPES = {"daiyu": daiyu, "elizabeth": elizabeth}


def main() -> None:
    for name in sys.argv[1:] or list(RECIPES):
        img = RECIPES[name](np.random.default_rng(14))
        face = detect_face(img)
        if face is None:
            raise SystemExit(f"make_avatars: FaceMesh finds no face in {name}; the talking head could not animate it.")
        print(f"{name}: face found, {face.height:.1f} px forehead to chin", file=sys.stderr)
        cv2.imwrite(str(HERE / f"{name}.png"), img[..., ::-1])


if __name__ == "__main__":
    main()

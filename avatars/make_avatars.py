"""Make the two character portraits from skimage.data.astronaut() (public domain, NASA): python avatars/make_avatars.py"""
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from talking_head.face import detect_face  # noqa: E402

src = skimage.data.astronaut()  # RGB 512x512
crop = src[10:340, 60:390]  # head and shoulders
crop = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC)
hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
h, s, v = [c.astype(np.int32) for c in cv2.split(hsv)]
suit = ((h < 18) | (h > 170)) & (s > 120) & (v > 60)  # the orange suit
suit &= np.arange(512)[:, None] > 250  # below the face: hair shadows are orange too
suit = cv2.GaussianBlur(suit.astype(np.float32), (0, 0), 2)

def recolor(hue: int, sat_scale: float, val_scale: float) -> np.ndarray:
    """The crop with the suit's hue replaced."""
    hh = np.where(suit > 0.5, hue, h)
    ss = np.clip(s * np.where(suit > 0.5, sat_scale, 1.0), 0, 255)
    vv = np.clip(v * np.where(suit > 0.5, val_scale, 1.0), 0, 255)
    out = cv2.cvtColor(cv2.merge([hh.astype(np.uint8), ss.astype(np.uint8), vv.astype(np.uint8)]), cv2.COLOR_HSV2RGB)
    a = suit[..., None]
    return (out * a + crop * (1 - a)).astype(np.uint8)

# Daiyu: jade-green robe, painted look, pale rice-paper tone
d = recolor(72, 0.45, 0.95)
d = cv2.addWeighted(cv2.edgePreservingFilter(d, flags=1, sigma_s=30, sigma_r=0.3), 0.7, d, 0.3, 0)
paper = np.array([236, 230, 212], np.float32)
d = (d.astype(np.float32) * 0.85 + paper * 0.15)
d = np.clip(d * np.array([0.98, 1.0, 0.96]), 0, 255).astype(np.uint8)

# Elizabeth: deep blue Regency gown, oil-painting texture, warm varnish
e = recolor(112, 0.8, 0.75)
e = cv2.addWeighted(cv2.xphoto.oilPainting(e[..., ::-1].copy(), 3, 1)[..., ::-1], 0.55, cv2.bilateralFilter(e, 7, 40, 7), 0.45, 0)
varnish = np.array([1.06, 0.98, 0.84])
e = np.clip(e.astype(np.float32) * varnish + np.array([8, 4, 0]), 0, 255).astype(np.uint8)
yy, xx = np.mgrid[0:512, 0:512]
vign = 1 - 0.35 * (((xx - 256) / 256) ** 2 + ((yy - 230) / 256) ** 2)
e = np.clip(e * vign[..., None], 0, 255).astype(np.uint8)

for name, img in (("daiyu", d), ("elizabeth", e)):
    face = detect_face(img)
    print(name, "face found" if face else "NO FACE", face.height if face else None)
    cv2.imwrite(str(Path(__file__).resolve().parent / f"{name}.png"), img[..., ::-1])

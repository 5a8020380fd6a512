"""The one ffmpeg lookup (voice decodes recordings with it, talking_head encodes video), and how
to name a file on its command line safely."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


class FfmpegMissing(RuntimeError):
    """No ffmpeg on this machine; the message says how to get one."""


def ffmpeg_exe() -> str:
    """The system ffmpeg first, else the static build imageio-ffmpeg ships.

    Why this order: the distribution's ffmpeg gets its security fixes (it parses whatever a
    browser or an upload sends) and has every codec Debian builds; imageio-ffmpeg's copy is
    frozen at its release and serves only where no system ffmpeg is installed.
    """
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise FfmpegMissing(
            "ffmpeg is missing; install it with `apt-get install ffmpeg` or `pip install imageio-ffmpeg`."
        ) from exc


def ffprobe_exe() -> str | None:
    """The system ffprobe, if installed (imageio-ffmpeg ships none)."""
    return shutil.which("ffprobe")


def file_arg(path: str | Path) -> str:
    """A local file as ffmpeg/ffprobe input: ``file:`` + the absolute path.

    A bare name could be read as an option ("-i" is safe, ffprobe's positional input is not) or as
    a protocol ("concat:…", "http://…", "subfile,,…"); ``file:`` means the file and nothing else.
    """
    return "file:" + os.path.abspath(os.fspath(path))

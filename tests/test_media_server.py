"""The page's server serves its media: ``start.py`` with no terminal, a real websocket session, the portrait's URL.

A starlette that Streamlit's gzip middleware cannot drive (1.8-1.10) answers every /media/ request with
500, so a fresh install showed no portrait and played no audio (issue 19); this test fails on such an
install without a browser. It also proves that start.py never prompts: stdin is /dev/null and the server
must come up (Streamlit's interactive first run asks for an email address and dies on EOF).
"""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MEDIA_URL = re.compile(rb"/media/[0-9a-f]+\.(?:png|jpg|jpeg|webp)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page_server(zhiyin_home: Path, tmp_path: Path):
    port = free_port()
    log = tmp_path / "server.log"
    # No terminal, no HOME credentials: what a service manager or a container gives the launcher.
    env = dict(os.environ, ZHIYIN_HOME=str(zhiyin_home), HOME=str(tmp_path / "home-of-user"),
               ZHIYIN_LLM_BACKEND="openai")  # nothing to assemble: this test is about the server
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "start.py", "--port", str(port)], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"start.py exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"no server after 180 s:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.5)
        yield url, port, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def page_messages(port: int, until: re.Pattern, timeout: float = 90) -> set[bytes]:
    """Run the page once over Streamlit's own websocket protocol; the matches of ``until`` in what it sends."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from websockets.sync.client import connect

    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    found: set[bytes] = set()
    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"], max_size=None,
                 open_timeout=30) as ws:
        ws.send(rerun.SerializeToString())
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            try:
                found |= set(until.findall(ws.recv(timeout=5)))
            except TimeoutError:
                continue
    return found


def test_the_page_server_serves_the_portrait(page_server) -> None:
    from PIL import Image

    from characters import avatar_path, load_card

    url, port, log = page_server
    urls = page_messages(port, MEDIA_URL)
    assert urls, "the page showed no image"
    with urllib.request.urlopen(url + next(iter(urls)).decode(), timeout=30) as resp:
        assert resp.status == 200
        served = Image.open(io.BytesIO(resp.read())).convert("RGB")
    # The right picture: the served image is the first character's portrait, scaled.
    portrait = Image.open(avatar_path(load_card("daiyu"))).convert("RGB").resize(served.size)
    diff = np.abs(np.asarray(served, dtype=float) - np.asarray(portrait, dtype=float)).mean()
    assert diff < 12, diff
    text = log.read_text(errors="replace")
    assert "Email" not in text and "Traceback" not in text, text[-2000:]

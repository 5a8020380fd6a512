"""The whole thing as a person uses it: ``python start.py`` serves the page, headless Chromium asks a question.

Set ``ZHIYIN_APP_SCREENSHOT=docs/screenshot.png`` to also save the screenshot there (docs/app.md
says how the committed one was made, with the real model).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
START_TIMEOUT_S = 240  # preparing the stores + starting Streamlit on a busy 2-core CPU
ANSWER_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"start.py exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the server did not answer within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-3000:]}")


def chromium_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture
def server(tiny_qwen_dir: Path, zhiyin_home: Path, tmp_path: Path):  # noqa: F811
    """``python start.py --headless --port N`` in a fresh home, the tiny model unless the environment names one."""
    port = free_port()
    env = dict(os.environ, ZHIYIN_HOME=str(zhiyin_home), PYTHONUNBUFFERED="1")
    if "ZHIYIN_APP_SCREENSHOT" not in os.environ:  # the committed screenshot is taken with the real model
        env.update(ZHIYIN_LLM_BACKEND="transformers", ZHIYIN_LLM_MODEL=str(tiny_qwen_dir), ZHIYIN_MAX_TOKENS="24",
                   ZHIYIN_TTS_ENGINE="espeak")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "start.py", "--headless", "--port", str(port)], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, proc, log)
        yield url, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.skipif(CHROMIUM is None or not Path(CHROMEDRIVER).exists(),
                    reason="chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
def test_a_question_typed_in_the_browser_gets_an_answer(server, tmp_path: Path) -> None:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, log = server
    assert "Zhiyin is starting at http://127.0.0.1:" in log.read_text(errors="replace")
    driver = chromium_driver(tmp_path / "chromium-profile")
    try:
        driver.get(url)
        wait = WebDriverWait(driver, ANSWER_TIMEOUT_S)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, '[data-testid="stChatInputTextArea"]')))
        greeting = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')
        assert len(greeting) == 1 and "潇湘馆" in greeting[0].text
        box.send_keys("宝玉是谁？")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')) >= 3)
        # Done when the sources expander of the answer is drawn (it follows the streamed text and speech).
        wait.until(lambda d: any("Sources" in e.text for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stExpander"]')))
        messages = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')
        assert "宝玉是谁" in messages[1].text
        assert messages[2].text.strip()
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        # Open the sources (the highlighted passages belong in the picture) and let the audio players load.
        driver.find_elements(By.CSS_SELECTOR, '[data-testid="stExpander"] summary')[-1].click()
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", messages[0])
        time.sleep(2)  # let the last element settle before the picture
        shot = tmp_path / "app.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        target = os.environ.get("ZHIYIN_APP_SCREENSHOT")
        if target:
            shutil.copyfile(shot, REPO / target)
    finally:
        driver.quit()

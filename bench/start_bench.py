"""How long ``python start.py`` takes until the page is ready, on a prepared install.

Runs ``start.py --headless`` (stdin from /dev/null) in a prepared home three times and measures
the seconds until the server answers its health check and until a first page run has drawn the
chat input (over Streamlit's own websocket protocol, as a browser's first visit does).
Run: ``python bench/start_bench.py [--home DIR] [--runs 3]``; writes bench/results/start.json.
Target (issue 14): the page ready <= 15 s after ``python start.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from fileio import write_text_atomic  # noqa: E402

RESULTS = REPO / "bench" / "results" / "start.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_drawn(port: int, timeout: float = 120) -> bool:
    """One page run over the websocket; True once the chat input arrives."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from websockets.sync.client import connect

    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"], max_size=None) as ws:
        ws.send(rerun.SerializeToString())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if b"Ask " in ws.recv(timeout=5):  # the chat input's placeholder: "Ask 林黛玉…"
                    return True
            except TimeoutError:
                continue
    return False


def one_start(home: Path) -> dict:
    port = free_port()
    env = dict(os.environ, ZHIYIN_HOME=str(home))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "start.py", "--headless", "--port", str(port)], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise RuntimeError("start.py did not come up")
                time.sleep(0.1)
        health = time.perf_counter() - t0
        drawn = page_drawn(port)
        return {"health_s": round(health, 2), "page_s": round(time.perf_counter() - t0, 2), "drawn": drawn}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("/tmp/zhiyin-start-bench"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    args.home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ZHIYIN_HOME=str(args.home))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "start.py", "--prepare-only"], cwd=REPO, env=env, check=True,
                   stdin=subprocess.DEVNULL)
    prepare_s = time.perf_counter() - t0
    runs = [one_start(args.home) for _ in range(args.runs)]
    summary = {"prepare_only_s": round(prepare_s, 1),
               "page_ready_p50_s": round(statistics.median(r["page_s"] for r in runs), 2),
               "health_p50_s": round(statistics.median(r["health_s"] for r in runs), 2),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS, json.dumps({"summary": summary, "runs": runs, "target_page_ready_s": 15}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

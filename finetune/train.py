"""Train a LoRA adapter (peft) on a character's extracted lines, on CPU or GPU.

Each run writes a new version ``checkpoints/adapters/<character>/v-<time>-<pid>/`` with
``manifest.json`` (base model and its hash, data hash, hyper-parameters, loss curve, held-out
loss before and after), and a complete run then becomes the live one (llm/adapters.py): the
previous adapter is kept. Ctrl-C saves a usable adapter and the optimizer state in the run's
version, and ``resume=True`` continues the newest version.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import settings
from finetune.base import TrainError, load_base, resolve_base
from finetune.extract import record_to_turns
from llm import adapters

MANIFEST = "manifest.json"
STATE = "trainer_state.pt"


@dataclass
class TrainConfig:
    """Hyper-parameters of one LoRA run (all recorded in the manifest)."""

    steps: int = 60
    lr: float = 2e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    batch_size: int = 2
    max_len: int = 320
    eval_samples: int = 16
    seed: int = 0
    warmup: int = 5
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


def adapter_dir(character_id: str) -> Path:
    """Where a character's adapter versions live: ``checkpoints/adapters/<character>/``."""
    from characters import safe_id

    return settings.paths().checkpoints / "adapters" / safe_id(character_id)


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a model folder's config, tokenizer and weight files in name order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".gguf", ".model"})
    for f in files:
        if path.is_dir():
            h.update(f.name.encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ data


def load_records(path: Path) -> list[tuple[str, str, str]]:
    """(system, input, output) triples from an XTuner or messages JSONL file; bad lines are named, not skipped silently."""
    if not path.is_file():
        raise TrainError(f"No data file {path}; make one with `python -m finetune extract CHARACTER BOOK --out {path}`.")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(record_to_turns(json.loads(line)))
        except (ValueError, KeyError, IndexError, TypeError):
            raise TrainError(f"{path}:{n} is not an XTuner 'conversation' or chat 'messages' record; fix or delete that line.") from None
    if len(out) < 2:
        raise TrainError(f"{path} holds {len(out)} sample(s); training needs at least 2 (one is held out for evaluation).")
    return out


def encode(tokenizer: Any, system: str, user: str, answer: str, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels for one sample; only the character's answer is learned (prompt labels are -100)."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    a_ids = a_ids[: max(8, max_len // 2)]
    # Keep the system persona's start and the user's last words when the prompt is too long.
    room = max_len - len(a_ids)
    if len(p_ids) > room:
        head = room // 2
        p_ids = p_ids[:head] + p_ids[len(p_ids) - (room - head):]
    return p_ids + a_ids, [-100] * len(p_ids) + a_ids


def split_eval(n: int, eval_samples: int, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train / held-out indices (at least one of each)."""
    k = max(1, min(eval_samples, n // 5 or 1))
    held = set(random.Random(seed).sample(range(n), k))
    return [i for i in range(n) if i not in held], sorted(held)


def _batch(samples: list[tuple[list[int], list[int]]], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for r, (x, y) in enumerate(samples):
        ids[r, : len(x)] = torch.tensor(x)
        labels[r, : len(y)] = torch.tensor(y)
        mask[r, : len(x)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def evaluate(model: Any, samples: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 4) -> dict[str, float]:
    """Mean loss per answer token on held-out samples, and its perplexity."""
    import torch

    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            batch = _batch(chunk, pad_id, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            shift_logits, shift_labels = logits[:, :-1].float(), batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
            total += float(loss)
            tokens += int((shift_labels != -100).sum())
    model.train()
    mean = total / max(tokens, 1)
    return {"loss": round(mean, 4), "perplexity": round(math.exp(min(mean, 50)), 2), "tokens": tokens}


# ------------------------------------------------------------------ training


@dataclass
class TrainResult:
    """What a run did; the same facts as the manifest."""

    adapter: Path
    manifest: dict[str, Any]


def _save(model: Any, out: Path, manifest: dict[str, Any], optimizer: Any, step: int, curve: list) -> None:
    """Write adapter + manifest (+ optimizer state) to a temp folder, then swap it in, so a crash never leaves half an adapter.

    ``out`` is this run's own version folder: only a resumed run replaces it, never another run's adapter.
    """
    import torch

    tmp = out.with_name(out.name + ".tmp")  # not a version name (llm/adapters.py): never served half-written
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "curve": curve}, tmp / STATE)
    (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def train(character_id: str, data: Path, base: str = "", config: TrainConfig | None = None, resume: bool = False,
          on_step: Callable[[int, float], None] | None = None, progress: bool = True) -> TrainResult:
    """Train (or resume) the character's LoRA adapter; Ctrl-C saves a usable checkpoint and re-raises."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from tqdm import tqdm

    config = config or TrainConfig()
    folder = adapter_dir(character_id)
    data = Path(data)
    records = load_records(data)
    data_hash = sha256_path(data)
    base_obj = resolve_base(base)
    base_hash = sha256_path(base_obj.path)
    previous: dict[str, Any] | None = None
    if resume:
        out = adapters.latest(folder) or folder
        if not (out / MANIFEST).is_file():
            raise TrainError(f"Nothing to resume at {folder}; train without --resume first.")
        previous = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        if previous["data_sha256"] != data_hash or previous["base_sha256"] != base_hash:
            raise TrainError("The data or base model changed since that checkpoint; train without --resume to start over.")
        config = TrainConfig(**{**asdict(config), **previous["hyperparameters"], "steps": config.steps})
    else:
        out = adapters.new_version(folder)
    torch.manual_seed(config.seed)
    tokenizer, model, mode = load_base(base_obj)
    encoded = [encode(tokenizer, s, i, o, config.max_len) for s, i, o in records]
    train_idx, eval_idx = split_eval(len(encoded), config.eval_samples, config.seed)
    held_out = [encoded[i] for i in eval_idx]
    pad_id = tokenizer.pad_token_id
    started = time.time()
    before = previous["eval"]["before"] if previous else evaluate(model, held_out, pad_id)
    if previous:
        model = PeftModel.from_pretrained(model, out, is_trainable=True)
        state = load_state(out / STATE)
        step, curve = state["step"], state["curve"]
    else:
        names = {n.split(".")[-1] for n, _ in model.named_modules()}
        targets = [t for t in config.target_modules if t in names] or "all-linear"
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                          target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        step, curve, state = 0, [], None
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup)) * max(0.05, 1 - s / max(1, config.steps)),
        last_epoch=step - 1 if step else -1)
    # One fixed shuffled order per seed, so a resumed run sees the samples a whole run would have.
    order_rng = random.Random(config.seed)
    order: list[int] = []
    while len(order) < config.steps * config.batch_size:
        chunk = train_idx[:]
        order_rng.shuffle(chunk)
        order += chunk
    device = next(model.parameters()).device
    manifest: dict[str, Any] = {
        "character": folder.name,
        "version": out.name,
        "base_model": base_obj.label,
        "base_path": str(base_obj.path),
        "base_sha256": base_hash,
        "gguf_file": base_obj.gguf_file,
        "data": str(data),
        "data_sha256": data_hash,
        "samples": {"train": len(train_idx), "eval": len(eval_idx)},
        "hyperparameters": asdict(config),
        "mode": mode,
        "device": str(device),
        "loss_curve": curve,
        "eval": {"before": before},
    }
    trained_samples, t0 = 0, time.time()
    bar = tqdm(total=config.steps, initial=step, desc=f"LoRA {folder.name}", file=sys.stderr, disable=not progress)
    try:
        while step < config.steps:
            picked = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch = _batch([encoded[i] for i in picked], pad_id, device)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            trained_samples += len(picked)
            value = loss.detach().item()
            curve.append([step, round(value, 4)])
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
            if on_step is not None:
                on_step(step, value)
    except KeyboardInterrupt:
        bar.close()
        manifest.update(status="interrupted", steps_done=step, loss_curve=curve)
        _save(model, out, manifest, optimizer, step, curve)
        if adapters.live(folder) is None:
            adapters.set_live(folder, out)  # the first adapter ever: half-trained is better than none
        print(f"Interrupted at step {step}/{config.steps}; the adapter so far is saved in {out}. "
              f"Continue with --resume.", file=sys.stderr)
        raise
    bar.close()
    seconds = time.time() - t0
    after = evaluate(model, held_out, pad_id)
    manifest.update(
        status="complete", steps_done=step, loss_curve=curve,
        eval={"before": before, "after": after},
        train_seconds=round(seconds, 2),
        samples_per_second=round(trained_samples / seconds, 3) if seconds > 0 else None,
        total_seconds=round(time.time() - started, 2),
    )
    _save(model, out, manifest, optimizer, step, curve)
    if out != folder:  # a flat adapter of the older layout, resumed in place, is live already
        adapters.set_live(folder, out)
    return TrainResult(out, manifest)


def load_state(path: Path) -> dict[str, Any]:
    """The optimizer state of an interrupted run, read as plain tensors and numbers only.

    The file sits in a user folder: ``weights_only=True`` refuses a pickle that would run code.
    """
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        raise TrainError(f"{path} is not a plain training checkpoint (it may hold code), so it was not loaded; "
                         "delete it and train without --resume.") from exc

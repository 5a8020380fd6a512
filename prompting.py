"""Prompt assembly inside explicit token budgets.

The texts themselves live in ``prompts/<lang>.yaml`` (a character may override any key in
``knowledge/<id>/prompts.yaml``); this module only decides what goes where and how much of it.
The order serves llama.cpp's prefix cache:

    [system: card + her classic scenes + mode rules]  static for the whole conversation
    (+ a summary of turns dropped from the history: changes only when the history is trimmed)
    [role-play: the card's example exchanges, as the conversation's first turns]  static too
    [earlier turns, verbatim]                         unchanged since they were sent
    [this turn: new passages + her own lines + what she remembers of the reader + the question]

so a follow-up evaluates only what is new. Why each budget has its value: docs/ragchat.md.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from cards.spec import with_original
from characters import Card, character_dir
from knowledge_base.store import Hit
from registry import Registry

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
CARD_PROMPTS = "prompts.yaml"  # a character's own overrides, beside card.yaml


# ------------------------------------------------------------------------ budgets
def count_tokens(text: str) -> int:
    """A model-free token estimate: Qwen's BPE spends ~0.82 token per Chinese character and ~0.24
    per other character (measured with the GGUF's tokenizer on both novels; docs/ragchat.md)."""
    cjk = len(re.findall(r"[\u3000-\u9fff\uff00-\uffef]", text))
    return int(cjk * 0.82 + (len(text) - cjk) * 0.24) + 1


@dataclass(frozen=True)
class Budget:
    """Token budgets for each part of the prompt (the answer's own budget is max_tokens)."""

    # The whole static head: persona, speaking style, her era, example exchanges, her classic scenes and
    # the mode's rules. Its llama.cpp state is saved once (llm/prompt_state.py), so its size costs nothing
    # per turn; the scenes take what the rest leaves, up to ``scenes`` (docs/persona.md).
    card: int = 1650
    # The card's example exchanges (role-play), sent as turns after the system prompt, inside ``card``: five
    # short ones (two of them her way with a question from another world) ~290 tokens.
    dialogue: int = 320
    scenes: int = 900  # her classic scenes from the book (persona/scenes.py, role-play), inside ``card``
    passages: int = 700  # the first turn's passages
    # A follow-up's passages are read while the reader waits (all before them is cached): small. At 80 a
    # follow-up read ~160 new tokens, 3.1-4.1 s to its first word on 2 idle cores (bench/results/turn.json).
    followup_passages: int = 48
    passage: int = 260  # one passage's most
    # An excerpt mode's first turn keeps its best passage whole up to this, then excerpts the rest: with
    # 340 tokens it put the evidence in the prompt as often as excerpts alone or more on 8 question sets
    # (USE and EmbeddingGemma stores), more on 5 of them (docs/ragchat.md, "The best passage whole").
    lead: int = 200
    examples: int = 60  # her own lines on the question (from the passages and the whole book): short ones
    followup_examples: int = 40  # a line on a follow-up, for a mode that shows one there (role-play no longer does)
    history: int = 1400  # earlier turns kept verbatim; the oldest are dropped first
    # Over budget, drop the oldest turns down to this share at once, so the following turns append
    # to an unchanged prefix instead of shifting it every turn (1.0 = a sliding window).
    history_keep: float = 0.5
    # World info from a card's lorebook (cards/worldinfo.py), all entries of a turn together: the head's
    # constants plus what this turn's words fire. A card's own token_budget may only lower it.
    lore: int = 200
    # What she remembers about the reader (conversations/memory.py) goes in the turn's own message, never
    # the static head: the first turn carries most of it, a follow-up only memories that bear on it.
    memory: int = 100
    followup_memory: int = 40
    summary: int = 200  # turns dropped from the history, summarised at the end of the system message


def history_start(costs: Sequence[int], budget: Budget) -> int:
    """How many of the replayed turns (their token costs, oldest first) to drop: none while they fit the
    history budget, else down to ``history_keep`` of it at once, so later turns append to a stable prefix."""
    total = sum(costs)
    if total <= budget.history:
        return 0
    drop, floor = 0, budget.history * budget.history_keep
    while drop < len(costs) and total > floor:
        total -= costs[drop]
        drop += 1
    return drop


def trim_passage(text: str, matched: list[str], budget: int) -> str:
    """Cut a passage to ``budget`` tokens, centred on the first matched word (whole text if it fits)."""
    if count_tokens(text) <= budget:
        return text
    ratio = len(text) / max(count_tokens(text), 1)
    width = int(budget * ratio)
    pos = min((text.find(w) for w in matched if w in text), default=0)
    while True:
        start = max(0, min(pos - width // 3, len(text) - width))
        out = ("…" if start else "") + text[start : start + width] + ("…" if start + width < len(text) else "")
        if count_tokens(out) <= budget or width <= 1:
            return out
        # A window can be denser in CJK than the passage's average: shrink until it fits.
        width = min(width - 1, int(width * 0.95))


def whole_passages(hits: list[Hit], budget: int, per_passage: int, lang: str) -> list[tuple[Hit, str]]:
    """The top passages in rank order, each trimmed to ``per_passage``, as many as fit ``budget``."""
    chosen, used = [], 0
    for h in hits:
        body = trim_passage(" ".join(h.text.split()) if lang == "en" else h.text, h.matched, min(per_passage, budget))
        cost = count_tokens(body)
        if chosen and used + cost > budget:
            break
        chosen.append((h, body))
        used += cost
    return chosen


# ------------------------------------------------------------------------ texts
@lru_cache(maxsize=8)
def _language_texts(lang: str) -> dict[str, Any]:
    return yaml.safe_load((PROMPTS_DIR / f"{lang}.yaml").read_text(encoding="utf-8"))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def texts_for(card: Card) -> dict[str, Any]:
    """The prompt texts of the card's language, with the character's own overrides merged in."""
    texts = _language_texts(card.lang)
    own = character_dir(card.id) / CARD_PROMPTS if card.id else None
    if own is not None and own.is_file():
        over = yaml.safe_load(own.read_text(encoding="utf-8")) or {}
        if isinstance(over, dict):
            texts = _merge(texts, over)
    return texts


# --------------------------------------------------------------------------- modes
@dataclass(frozen=True)
class Mode:
    """How the character is asked to answer (its texts are in prompts/<lang>.yaml under modes.<name>)."""

    name: str
    cite: bool  # ask for chapter citations
    examples: bool = True  # her own lines and the card's exchanges: voice for role-play, noise for facts
    temperature_setting: str = "temperature"  # the Settings field that sets this mode's temperature
    excerpts: bool = False  # send the sentences that bear on the question, not whole passages
    ask_first: bool = False  # state the question before the passages too
    k: int = 4  # passages retrieved per turn
    # A first turn's passages are evaluated while the reader waits (her head is restored from a saved
    # state, llm/prompt_state.py): at ~90 tokens/s on 2 cores this caps the wait for her first word.
    first_passages: int = 700
    max_tokens: int = 384  # the answer's cap in this mode (Settings.max_tokens may only lower it)
    # In character: the card's ``era`` line in the head, her era's modern words steered away and guarded,
    # assistant talk guarded (persona/guard.py). Loops and echoes are guarded in every mode.
    in_character: bool = False
    lines: tuple[int, int] = (3, 0)  # her own lines shown on a first turn, on a follow-up
    # A card's system_prompt / post_history_instructions replace the rules / reminder (V2, {{original}}
    # standing for ours): role-play is the chat cards are written for; reader mode keeps its citing rules.
    card_prompts: bool = False

    def text(self, texts: dict[str, Any], key: str, name: str) -> str:
        """One of this mode's texts ('' when the language has none), with her name filled in."""
        return str(texts["modes"].get(self.name, {}).get(key, "") or "").format(name=name)


MODES: Registry[Mode] = Registry("mode")
# Reader: excerpts of ten passages put the answer in the prompt for 18 of 20 questions (whole: 12);
# the question first and a someone-else reminder lifted accuracy to 0.65-0.70 (docs/ragchat.md).
# 340 tokens of them, not 600: a first turn's new tokens are read at ~65/s on 2 cores. On chat_bench's 20
# questions (seed 0) 340 / 440 / 600 answered 0.45 / 0.50 / 0.45, the answer in the prompt 0.55 / 0.55 /
# 0.70, first word 6.8 / 8.4 / 10.7 s (bench/results/chat.json, docs/ragchat.md).
_READER = Mode("reader", cite=True, examples=False, excerpts=True, ask_first=True, k=10,
               temperature_setting="reader_temperature", first_passages=340, max_tokens=320)
# Role-play keeps whole passages, a scene: a conversation needs the scene more than one fact. Her first
# word should come within ~4 s, and a first turn's new tokens are read at ~65/s: 260 tokens of passages
# and two of her lines (up to 120 tokens) made 330-420 new tokens, 5-7 s (bench/results/turn.json); with
# this constant at 140 and two short lines (60 tokens in all: one from the passages, one from her whole
# book) one run took 3.96 s p50, too close to 4: 120 it is (3.6 s). Her voice is in the cached head (her
# scenes); a follow-up adds no line of hers (~30 tokens, 0.5 s). The cut costs some of it (docs/persona.md:
# ``bench/persona_bench.py --passages 260 --examples 120 --lines 2,1`` measures the longer prompt).
# Two or three sentences need ~80 tokens: a cap of 160 leaves room and cuts a loop short.
_ROLEPLAY = Mode("roleplay", cite=False, card_prompts=True, first_passages=120, max_tokens=160,
                 in_character=True, lines=(2, 0))
for _m in (_READER, _ROLEPLAY):
    MODES.register(_m.name)(lambda m=_m: m)


TURN_MARKS = 10  # tokens a chat template adds around one exchange (<|im_start|>user … <|im_end|> …)


def mode_rules(card: Card, mode: Mode, texts: dict[str, Any]) -> str:
    """The mode's rules that end the system prompt (a card's own system prompt around them, where it has one)."""
    rules = mode.text(texts, "rules", card.name)
    return with_original(card.system_prompt, rules) if mode.card_prompts else rules


def example_turns(card: Card, mode: Mode, budget: Budget) -> list[tuple[str, str]]:
    """Role-play's example exchanges from her card as (the visitor's message, her reply): the conversation's
    first turns, the visitor's words labelled as a real turn's are (as SillyTavern can send example messages).
    Sent so rather than inside the system text, fewer questions of her own world met the fallback line, 3 of
    84 against 11 (docs/persona.md, session 13). As many as fit, the first first, within ``budget.dialogue``
    and half of what the mode's rules leave of the card's budget: the persona comes first."""
    if not mode.examples:
        return []
    texts = texts_for(card)
    room = min(budget.dialogue, (budget.card - count_tokens(mode_rules(card, mode, texts)) - 2) // 2)
    turns: list[tuple[str, str]] = []
    for ex in card.example_dialogue:
        user, reply = str(ex.get("user", "")).strip(), str(ex.get("reply", "")).strip()
        if not (user and reply):
            continue
        said = texts["labels"]["chat"] + "\n" + user
        room -= count_tokens(said) + count_tokens(reply) + TURN_MARKS
        if room < 0:
            break
        turns.append((said, reply))
    return turns


def _fit(blocks: list[str], label: str, room: int) -> str:
    """``label`` and as many of ``blocks`` as fit ``room`` tokens, in order ('' when none fits)."""
    shown: list[str] = []
    for block in blocks:
        if count_tokens("\n\n".join([label, *shown, block])) > room:
            break
        shown.append(block)
    return label + "\n" + "\n\n".join(shown) if shown else ""


def system_prompt(card: Card, mode: Mode, budget: Budget, world: dict[str, str] | None = None,
                  scenes: list[str] | None = None) -> str:
    """The static head of every prompt: who she is, how she speaks, her era, her classic scenes from the
    book, the mode's rules (her example exchanges follow it as turns: example_turns).

    ``world``: the lorebook's stable entries by place (cards.worldinfo.WorldInfo.head), kept within
    Budget.lore and never cut here. ``scenes``: her exchanges from the book (persona.scenes.head_scenes),
    as many as the room the rest leaves (up to Budget.scenes)."""
    texts = texts_for(card)
    lab = texts["labels"]
    rules = mode_rules(card, mode, texts)
    world = world or {}
    room = budget.card - count_tokens(rules) - 2
    # Her example exchanges follow this text as turns of their own (example_turns): their room is kept.
    room -= sum(count_tokens(u) + count_tokens(r) + TURN_MARKS for u, r in example_turns(card, mode, budget))
    era = f"{lab.get('era', '')}\n{card.era.strip()}".strip() if mode.in_character and card.era.strip() else ""
    head = "\n\n".join(p for p in (card.persona.strip(), card.speaking_style.strip(), card.scenario.strip(), era) if p)
    while head and count_tokens(head) > room:  # an over-long card is cut, never the rules at its end
        head = head[: int(len(head) * 0.9)]
    room -= count_tokens(head) + 2 if head else 0
    lore_after = "\n\n".join(world[p] for p in ("after_desc", "personality", "scenario") if world.get(p))
    shown = _fit(scenes or [], lab.get("scenes", ""), min(budget.scenes, room)) if mode.examples else ""
    return "\n\n".join(p for p in (world.get("before_desc", ""), head, lore_after, shown, rules) if p)


def turn_prompt(card: Card, mode: Mode, text: str, passages: list[tuple[Hit, str]], lines: list[str],
                prefill: str, follow_up: bool, lore_before: str = "", lore_after: str = "",
                memories: Sequence[str] = (), about_reader: bool = False, off_world: bool = False) -> str:
    """This turn's own message: (world info,) (question,) passages, her lines, what the reader told her
    before, the question (, the world info placed right after it: ``@@depth 0``) and a reminder (a card's
    post_history_instructions). ``about_reader``: the reader asks what she remembers of them; the
    memories answer it, with no passages and the mode's ``memory_reminder``. ``off_world``: the question
    comes from outside her world (persona/strange.py): the mode's ``offworld_reminder``, when it has one."""
    texts = texts_for(card)
    lab = texts["labels"]
    ask = (lab["question"] if mode.cite else lab["chat"]) + "\n" + text
    parts = [ask] if mode.ask_first else []
    if about_reader:
        pass  # no passages: her memories of the reader answer it
    elif passages:
        parts.append(lab["passages"])
        for n, (h, body) in enumerate(passages, 1):
            # The chapter's number is what an answer cites; its title and the file cost ~25 tokens a passage
            # of a first turn read while the reader waits (the page's sources show them in full).
            where = chapter_label(h.chapter) or ("" if not mode.cite else h.source)
            parts.append(f"[{n}] {where}\n{body}")
    elif not follow_up:
        parts += [lab["passages"], lab["none"]]
    else:
        parts = []  # the passages of earlier turns are still in the conversation above
    if lines:
        parts.append(lab["examples"] + "\n" + "\n".join(lab["quote"].format(text=x) for x in lines))
    if memories:
        parts.append(lab["memories"] + "\n" + "\n".join(lab["quote"].format(text=x) for x in memories))
    key = "prefill_reminder" if prefill else "reminder"
    # A follow-up may say it shorter: the whole reminder is in the conversation above, and every token
    # of this message is read while the reader waits.
    reminder = (follow_up and mode.text(texts, "followup_" + key, card.name)) or mode.text(texts, key, card.name)
    if about_reader:
        reminder = mode.text(texts, "memory_reminder", card.name) or reminder
    elif off_world:
        reminder = mode.text(texts, "offworld_reminder", card.name) or reminder
    if mode.card_prompts:
        reminder = with_original(card.post_history_instructions, reminder)
    parts.append("\n".join(p for p in (ask, lore_after, reminder) if p))
    # World info opens the turn's own message: what it adds is new this turn anyway (cards/worldinfo.py).
    return "\n\n".join([lore_before, *parts] if lore_before else parts)


REMINDERS = ("reminder", "prefill_reminder", "followup_reminder", "followup_prefill_reminder", "offworld_reminder",
             "memory_reminder")


def reminders(card: Card, mode: Mode) -> list[str]:
    """Every reminder a turn of this mode may end with, her name filled in: words an answer must not recite
    (「（访者若说错了书里的事，照实纠正他。）」 was shown to a reader once)."""
    texts = texts_for(card)
    return [t for t in (mode.text(texts, key, card.name) for key in REMINDERS) if t]


_CHAPTER_NUMBER = re.compile(r"^\s*(第\S{1,8}?[回章节卷部]|(?:chapter|book|part|volume|letter|stave)\s+(?:the\s+)?[\w.-]+)", re.I)


def chapter_label(chapter: str) -> str:
    """A chapter's number without its title (第十九回, Chapter 6); a heading without a number stays whole."""
    m = _CHAPTER_NUMBER.match(chapter or "")
    return m.group(1).rstrip(".") if m else (chapter or "").strip()


def _clip(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars].rstrip() + "…"


def summary_block(card: Card, turns: Sequence, budget: int) -> str:
    """Turns dropped from the history, summarised without a model: each question and the first sentence of
    her answer, the newest that fit ``budget``. Deterministic, so a resumed conversation rebuilds it exactly."""
    from sentences import split_sentences

    if not turns or budget <= 0:
        return ""
    lab = texts_for(card)["labels"]
    used, lines = count_tokens(lab["summary"]) + 2, []
    for t in reversed(turns):
        said = split_sentences(t.answer)
        line = (f"{lab['visitor']}{lab['separator']}{_clip(t.question, 40)} → "
                f"{card.name}{lab['separator']}{_clip(said[0] if said else '', 60)}")
        cost = count_tokens(line) + 1
        if used + cost > budget:
            break
        lines.append(line)
        used += cost
    if not lines:
        return ""
    return lab["summary"] + "\n" + ("…\n" if len(lines) < len(turns) else "") + "\n".join(reversed(lines))


def greeting(card: Card) -> str:
    return card.greeting or texts_for(card)["labels"]["i_am"].format(name=card.name)

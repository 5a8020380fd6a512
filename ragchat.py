"""The retrieval chain: a character answers from her book, with sources, streaming.

``Companion(character, mode="reader"|"roleplay").chat(text)`` retrieves passages from the
character's knowledge store, assembles a prompt inside explicit token budgets and streams
the chat model's answer. The prompt is ordered for llama.cpp's prefix cache:

    [system: card + mode rules]  static for the whole conversation
    [earlier turns, verbatim]    unchanged since they were sent
    [this turn: new passages + the character's own lines + the question]

so a follow-up turn only evaluates what is new. (Putting this turn's passages before the
history would make every follow-up re-read the whole history.)

CLI: ``python ragchat.py CHARACTER -q QUESTION [-q ...] [--mode reader|roleplay] [--json]``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from characters import Card, CharacterError, load_card
from knowledge_base import excerpts
from knowledge_base.store import Hit, KnowledgeStore, StoreError
from registry import Registry
from settings import Settings, load_settings


class ChatError(RuntimeError):
    """Something the user can fix (no store, no model); the message says how."""


# ------------------------------------------------------------------------ budgets
def count_tokens(text: str) -> int:
    """A close, model-free token estimate: Qwen's BPE spends ~0.82 token per Chinese
    character and ~0.24 per other character (measured on both novels)."""
    cjk = len(re.findall(r"[\u3000-\u9fff\uff00-\uffef]", text))
    # Measured with the GGUF's own tokenizer on 200 random 300-character windows of each novel
    # (bench/chat_bench.py docs): 0.82 per classical Chinese character, 0.24 per English one.
    return int(cjk * 0.82 + (len(text) - cjk) * 0.24) + 1


@dataclass(frozen=True)
class Budget:
    """Token budgets for each part of the prompt (the answer's own budget is max_tokens)."""

    card: int = 600  # persona, speaking style, example exchanges and the mode's rules
    dialogue: int = 180  # the card's example exchanges (role-play), inside ``card``
    passages: int = 700  # the first turn's passages
    # A follow-up's new passages are evaluated while the user waits (everything before them is
    # cached), so they get less: one passage trimmed to ~100 characters keeps a follow-up's new tokens near 110, under 3 s
    # at the ~55 tokens/s llama.cpp reads a follow-up after ~1,300 cached tokens (1.5B, 2 cores; bench/chat_bench.py).
    followup_passages: int = 80
    passage: int = 260  # one passage's most: its excerpt (reader) or the passage trimmed around the matched words
    examples: int = 120  # the character's own lines
    # None on a follow-up by default: the first turn's lines stay in the conversation, and ~30 more tokens
    # cost ~0.5 s of waiting on every turn.
    followup_examples: int = 0
    history: int = 1400  # earlier turns kept verbatim; the oldest are dropped first
    # When over budget, drop the oldest turns down to this share of it at once: the following turns
    # then append to an unchanged prefix instead of every turn shifting the window (which makes
    # llama.cpp re-read the whole history each turn). 1.0 = a sliding window.
    history_keep: float = 0.5


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
        # The window can be denser in CJK than the passage's average (and the "…" cost too): shrink to fit.
        width = min(width - 1, int(width * 0.95))


def whole_passages(hits: list[Hit], budget: int, per_passage: int, lang: str) -> list[tuple[Hit, str]]:
    """The top passages in rank order, each trimmed to ``per_passage`` around its matched words, as many
    as fit in ``budget`` (the first always does)."""
    chosen, used = [], 0
    for h in hits:
        body = trim_passage(" ".join(h.text.split()) if lang == "en" else h.text, h.matched, min(per_passage, budget))
        cost = count_tokens(body)
        if chosen and used + cost > budget:
            break
        chosen.append((h, body))
        used += cost
    return chosen


# --------------------------------------------------------------------- retrieval
class StoreRetriever(BaseRetriever):
    """A LangChain retriever over a character's KnowledgeStore (hybrid search)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    store: Any
    k: int = 4

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun | None = None
    ) -> list[Document]:
        return [Document(page_content=h.text, metadata=h.to_dict()) for h in self.store.search(query, k=self.k)]


# --------------------------------------------------------------------------- modes
@dataclass(frozen=True)
class Mode:
    """How the character is asked to answer, per language."""

    name: str
    rules: dict[str, str]
    cite: bool  # ask for chapter citations
    # Her own lines and the card's example exchanges show how she talks: useful in role-play, a
    # distraction from the facts in reader mode.
    examples: bool = True
    # A short reminder after each question: small models follow the latest words best (without it
    # Qwen2.5-Coder-1.5B often answered a role-play question by repeating it; bench/chat_bench.py).
    reminder: dict[str, str] = field(default_factory=dict)
    # The reminder when the answer's start is given (prefill): short, and without her name. Naming her
    # there made the 1.5B speak of "Elizabeth Bennet" as someone else; with no reminder at all it
    # slipped into the assistant's "I am sorry, but I cannot" (bench/chat_bench.py, docs/ragchat.md).
    prefill_reminder: dict[str, str] = field(default_factory=dict)
    temperature_setting: str = "temperature"  # which Settings field sets this mode's sampling temperature
    # The start of every answer, per language, for backends that continue a given start (Settings.roleplay_prefill).
    prefill: dict[str, str] = field(default_factory=dict)
    # Send the sentences of the retrieved passages that bear on the question (knowledge_base/excerpts.py)
    # rather than the top passages whole. Reader: the answer reached the prompt for 18 of 20 questions
    # instead of 12, accuracy 0.40 -> 0.55. Role-play keeps whole passages and k = 4: two runs with other
    # retrieval (excerpts and k = 10; whole and k = 10) each broke role in 2 of 20 unseeded turns, this code
    # in 2 of 60 seeded ones (three runs); and a conversation needs the scene more than a fact.
    excerpts: bool = False
    # State the question before the passages too, so the small model reads them knowing what it looks
    # for (reader, bench/chat_bench.py: 冷香丸 and 蕉下客 were found once it was; accuracy in docs/ragchat.md).
    ask_first: bool = False
    # Passages retrieved per turn (Companion's default k). Excerpts draw on more than fit whole: the
    # answer is in the top ten far more often than in the top three (kb_bench's recall@5 against @20).
    k: int = 4


MODES: Registry[Mode] = Registry("mode")

_READER = Mode(
    "reader",
    {
        "zh": (
            "现在有读者向你请教书中的事。请先在下面【书中段落】里找出答案，用段落原文里的词语简短作答"
            "（人名、地名、物名照原文写），再用（见第X回）注明出处。只有段落里确实找不到时，"
            "才说“书里没有写到这一点”，不要编造。你仍是{name}本人，用“我”说话，不要自称AI或助手。"
        ),
        "en": (
            "A reader is asking you about the book. First find the answer in the [Passages] below and give it "
            "briefly in the passage's own words (names as written there), then cite the chapter as (Chapter N). "
            "Only if the passages really do not contain it, say plainly that the book does not tell; never "
            "invent. You are still {name}: speak as \"I\", never as an AI or assistant."
        ),
    },
    cite=True,
    examples=False,
    excerpts=True,
    ask_first=True,
    k=10,
    temperature_setting="reader_temperature",
    reminder={
        # The first sentence: the card's own facts (潇湘馆) were given for every character's lodging.
        "zh": "（问的是谁就找谁的事，不要当成你自己。请先在上面的段落里找出答案，照原文的词语简短作答，并注明第几回。）",
        "en": "(Answer about whoever the question asks about, not about yourself. Find the answer in the passages "
              "above, give it briefly in their words, and cite the chapter.)",
    },
)
_ROLEPLAY = Mode(
    "roleplay",
    {
        "zh": (
            "现在是你与来访者的闲谈。你就是{name}本人，始终用第一人称“我”说话，用你自己的口吻和性情，"
            "绝不提到自己是AI、模型或助手，绝不用第三人称称呼自己（不要说“{name}她”）。"
            "可以参考【书中段落】里你经历过的事，回答两三句即可。"
        ),
        "en": (
            "You are chatting with a visitor. You ARE {name}: always speak in the first person (\"I\"), in your own "
            "voice and temper; never mention being an AI, a model or an assistant, and never refer to {name} in the "
            "third person. You may draw on the [Passages] for what you lived through. Answer in two or three sentences."
        ),
    },
    cite=False,
    prefill={"zh": "我", "en": "I"},
    prefill_reminder={"zh": "（用“我”，以你自己的身份直接回答。）", "en": "(Answer directly as yourself, in the first person.)"},
    reminder={
        "zh": "（请你以{name}的身份，用“我”直接回答来访者，不要重复来访者的话。）",
        "en": "(Answer the visitor directly as {name}, in the first person; do not repeat the visitor's words.)",
    },
)
for _m in (_READER, _ROLEPLAY):
    MODES.register(_m.name)(lambda m=_m: m)

_LABELS = {
    "zh": {"passages": "【书中段落】", "examples": "【你在书中说过的话】", "question": "【问题】", "none": "（没有检索到相关段落）",
           "chat": "【来访者说】"},
    "en": {"passages": "[Passages]", "examples": "[Lines you said in the book]", "question": "[Question]",
           "none": "(no relevant passage was found)", "chat": "[The visitor says]"},
}


def _dialogue(card: Card, lang: str, budget: int) -> str:
    """The card's example exchanges, as many as fit ``budget`` tokens (the first ones first)."""
    visitor, label = ("来访者", "【对话示例】") if lang == "zh" else ("Visitor", "[Example exchanges]")
    sep = "：" if lang == "zh" else ": "
    shown: list[str] = []
    for ex in card.example_dialogue:
        user, reply = str(ex.get("user", "")).strip(), str(ex.get("reply", "")).strip()
        if not (user and reply):
            continue
        pair = f"{visitor}{sep}{user}\n{card.name}{sep}{reply}"
        if count_tokens("\n\n".join([label, *shown, pair])) > budget:
            break
        shown.append(pair)
    return label + "\n" + "\n\n".join(shown) if shown else ""


def system_prompt(card: Card, mode: Mode, budget: Budget) -> str:
    """The static head of every prompt: who she is, how she speaks, example exchanges, the mode's rules."""
    lang = card.lang
    rules = mode.rules[lang].format(name=card.name)
    # The exchanges never take more than half of what the rules leave: the persona comes first.
    room = budget.card - count_tokens(rules) - 2
    dialogue = _dialogue(card, lang, min(budget.dialogue, room // 2)) if mode.examples else ""
    head = "\n\n".join(p for p in (card.persona.strip(), card.speaking_style.strip()) if p)
    # An over-long card is cut, never the rules at its end (2 tokens spare per join's rounding).
    room -= count_tokens(dialogue) + 2 if dialogue else 0
    while head and count_tokens(head) > room:
        head = head[: int(len(head) * 0.9)]
    return "\n\n".join(p for p in (head, dialogue, rules) if p)


# ------------------------------------------------------------------------ the chat
@dataclass
class Turn:
    question: str
    prompt: str  # what was actually sent for this turn (passages included), replayed verbatim later
    answer: str
    sources: list[dict] = field(default_factory=list)


class Companion:
    """One conversation with one character: ``chat(text)`` streams; ``last_sources`` cites."""

    def __init__(
        self,
        character: str | Card,
        mode: str = "reader",
        llm: BaseChatModel | None = None,
        settings: Settings | None = None,
        k: int | None = None,
        budget: Budget | None = None,
    ) -> None:
        try:
            self.card = character if isinstance(character, Card) else load_card(character)
        except CharacterError as exc:
            raise ChatError(str(exc)) from exc
        self.settings = settings or load_settings()
        self.mode = MODES.create(mode)
        self.budget = budget or Budget()
        self._k = k  # None: the mode's
        self._llm = llm
        self._store: KnowledgeStore | None = None
        self.history: list[Turn] = []
        self.last_sources: list[dict] = []
        self.last_timings: dict[str, float] = {}
        self.last_warning = ""
        self._seen: set[str] = set()  # chunk ids already in the conversation's prompt
        self._first_kept = 0  # index in history of the oldest turn still replayed

    # ---- parts --------------------------------------------------------------------------
    @property
    def llm(self) -> BaseChatModel:
        if self._llm is None:
            from llm import ModelMissing, get_chat_model

            try:
                self._llm = get_chat_model(self.settings)
            except ModelMissing as exc:
                raise ChatError(str(exc)) from exc
        return self._llm

    @property
    def store(self) -> KnowledgeStore:
        if self._store is None:
            try:
                self._store = KnowledgeStore.open(self.card.id)
            except StoreError as exc:
                raise ChatError(str(exc)) from exc
        return self._store

    @property
    def k(self) -> int:
        return self._k or self.mode.k

    @property
    def retriever(self) -> StoreRetriever:
        return StoreRetriever(store=self.store, k=self.k)

    @property
    def lang(self) -> str:
        return self.card.lang

    def set_mode(self, mode: str) -> None:
        """Switch reader/roleplay; the conversation restarts since the system prompt changes."""
        if mode != self.mode.name:
            self.mode = MODES.create(mode)
            self.reset()

    def reset(self) -> None:
        self.history.clear()
        self._seen.clear()
        self._first_kept = 0
        self.last_sources, self.last_timings, self.last_warning = [], {}, ""

    def greeting(self) -> str:
        return self.card.greeting or (f"我是{self.card.name}。" if self.lang == "zh" else f"I am {self.card.name}.")

    # ---- prompt ---------------------------------------------------------------------------
    def _passages(self, text: str, hits: list[Hit]) -> list[tuple[Hit, str]]:
        """New passages for this turn (ones already in the conversation are not repeated), within budget:
        excerpts of all of them, or the best ones whole, trimmed around the matched words (see Mode.excerpts)."""
        budget = self.budget.followup_passages if self.history else self.budget.passages
        fresh = [h for h in hits if h.chunk_id not in self._seen]
        if not fresh:
            return []
        if self.mode.excerpts:
            picked = excerpts.select(text, fresh, budget, self.budget.passage, count_tokens, self.store.idf, self.lang)
            return [(e.hit, e.text) for e in picked]
        return whole_passages(fresh, budget, self.budget.passage, self.lang)

    def _own_lines(self, hits: list[Hit]) -> list[str]:
        """A few lines the character herself speaks in the retrieved passages (how she talks about this)."""
        from finetune.extract import extract_lines  # the same rules that build fine-tuning data

        lines, used = [], 0
        budget = self.budget.followup_examples if self.history else self.budget.examples
        for h in hits:
            for line in extract_lines(h.text, self.card.names, language=self.lang):
                said = line.output.strip()
                cost = count_tokens(said)
                if said in lines or used + cost > budget:
                    continue
                lines.append(said)
                used += cost
        return lines[:3]

    def _turn_prompt(self, text: str, passages: list[tuple[Hit, str]], lines: list[str], prefill: str = "") -> str:
        lab = _LABELS[self.lang]
        ask = (lab["question"] if self.mode.cite else lab["chat"]) + "\n" + text
        parts = ([ask] if self.mode.ask_first else []) + [lab["passages"]]
        if passages:
            for n, (h, body) in enumerate(passages, 1):
                # Citing needs the chapter's title and the file; role-play only its number (tokens a follow-up saves).
                where = " · ".join(x for x in (h.chapter, h.source) if x) if self.mode.cite else h.chapter.split(" ")[0]
                parts.append(f"[{n}] {where}\n{body}")
        elif not self.history:
            parts.append(lab["none"])
        else:
            parts = []  # the passages of earlier turns are still in the conversation above
        if lines:
            parts.append(lab["examples"] + "\n" + "\n".join(f"“{x}”" if self.lang == "zh" else f'"{x}"' for x in lines))
        reminder = (self.mode.prefill_reminder if prefill else self.mode.reminder).get(self.lang, "")
        reminder = reminder.format(name=self.card.name)
        parts.append(ask + ("\n" + reminder if reminder else ""))
        return "\n\n".join(parts)

    def _history_messages(self) -> list[BaseMessage]:
        """Earlier turns, newest kept, verbatim (so the prefix cache still matches), within budget."""

        def cost(turns: list[Turn]) -> int:
            return sum(count_tokens(t.prompt) + count_tokens(t.answer) for t in turns)

        start = min(self._first_kept, len(self.history))
        if cost(self.history[start:]) > self.budget.history:
            floor = self.budget.history * self.budget.history_keep
            while start < len(self.history) and cost(self.history[start:]) > floor:
                start += 1
            self._first_kept = start
            # Dropped turns take their passages with them: they may be retrieved again.
            self._seen = {s["chunk_id"] for t in self.history[start:] for s in t.sources}
        msgs: list[BaseMessage] = []
        for turn in self.history[start:]:
            msgs += [HumanMessage(turn.prompt), AIMessage(turn.answer)]
        return msgs

    def build_messages(self, text: str) -> tuple[list[BaseMessage], str, list[dict], dict[str, int]]:
        """The messages for this turn (ending with the answer's start when there is one, see ``_prefill``),
        the turn's own prompt, its sources and tokens per part."""
        hits = [Hit(**d.metadata) for d in self.retriever.invoke(text)]
        self.last_warning = "" if hits else "no passage matched this question"
        passages = self._passages(text, hits)
        lines = self._own_lines(hits) if self.mode.examples else []
        history = self._history_messages()
        system = system_prompt(self.card, self.mode, self.budget)
        prefill = self._prefill()
        turn_prompt = self._turn_prompt(text, passages, lines, prefill)
        sources = [dict(h.to_dict(), n=n, passage=body) for n, (h, body) in enumerate(passages, 1)]
        tokens = {
            "card": count_tokens(system),
            "history": sum(count_tokens(str(m.content)) for m in history),
            "passages": sum(count_tokens(b) for _, b in passages),
            "examples": sum(count_tokens(x) for x in lines),
            "question": count_tokens(text),
        }
        messages = [SystemMessage(system), *history, HumanMessage(turn_prompt)]
        if prefill:
            messages.append(AIMessage(prefill))
        return messages, turn_prompt, sources, tokens

    # ---- the conversation -----------------------------------------------------------------
    def _prefill(self) -> str:
        """The answer's given start in this mode, if the settings and the backend allow one."""
        if not (self.settings.roleplay_prefill and getattr(self.llm, "supports_prefill", False)):
            return ""
        return self.mode.prefill.get(self.lang, "")

    def chat(self, text: str) -> Iterator[str]:
        """Stream the character's answer to ``text`` token by token; sources and timings follow."""
        text = text.strip()
        if not text:
            return
        t0 = time.perf_counter()
        messages, turn_prompt, sources, tokens = self.build_messages(text)
        t_retrieved = time.perf_counter()
        prefill = str(messages[-1].content) if isinstance(messages[-1], AIMessage) else ""
        answer: list[str] = [prefill] if prefill else []
        first = None
        try:
            if prefill:
                yield prefill  # shown at once; the timings below still wait for the model's own first token
            temperature = float(getattr(self.settings, self.mode.temperature_setting))
            for chunk in self.llm.stream(messages, temperature=temperature):
                piece = chunk.content if isinstance(chunk.content, str) else ""
                if not piece:
                    continue
                if first is None:
                    first = time.perf_counter()
                answer.append(piece)
                yield piece
        finally:
            # Whatever was generated (even if the reader stopped early) becomes part of the history.
            end = time.perf_counter()
            full = "".join(answer).strip()
            self.history.append(Turn(text, turn_prompt, full, sources))
            self._seen |= {s["chunk_id"] for s in sources}
            self.last_sources = sources
            self.last_timings = {
                "retrieve_ms": round((t_retrieved - t0) * 1000, 1),
                "first_token_ms": round(((first or end) - t0) * 1000, 1),
                "total_ms": round((end - t0) * 1000, 1),
            }
            self.last_tokens = tokens

    def ask(self, text: str) -> str:
        """The whole answer at once (for scripts and tests)."""
        return "".join(self.chat(text))

    # ---- export --------------------------------------------------------------------------
    def export_json(self) -> dict:
        return {"character": self.card.id, "name": self.card.name, "mode": self.mode.name,
                "turns": [asdict(t) | {"prompt": None} for t in self.history]}

    def export_markdown(self) -> str:
        lines = [f"# {self.card.name} — {self.mode.name}", ""]
        for t in self.history:
            lines += [f"**You:** {t.question}", "", f"**{self.card.name}:** {t.answer}", ""]
            for s in t.sources:
                lines.append(f"> [{s['n']}] {s['chapter'] or s['source']}: {s['passage'][:120]}…")
            lines.append("")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI
def _ensure_store(character: str) -> None:
    """Build a missing store first (with progress), as the CLI promises."""
    load_card(character)  # an unknown id is an error here, never a new empty character
    if KnowledgeStore.exists(character):
        return
    from gen_chroma import TqdmProgress
    from knowledge_base.builder import build

    print(f"'{character}' has no knowledge store yet; building it first…", file=sys.stderr)
    bar = TqdmProgress()
    try:
        build(character, embedder="use", progress=bar)
    finally:
        bar.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ragchat.py", description="Ask a character about her book, or chat with her.")
    p.add_argument("character")
    p.add_argument("-q", "--question", action="append", required=True, help="a turn (repeat for a conversation)")
    p.add_argument("--mode", choices=MODES.names(), default="reader")
    p.add_argument("--json", action="store_true", help="print one JSON object per turn instead of streaming")
    p.add_argument("-k", type=int, help="passages retrieved per turn (default: the mode's, 10 reader / 4 role-play)")
    p.add_argument("--backend", help="llamacpp | transformers | openai (default: settings)")
    p.add_argument("--model", help="model name or path (default: settings)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int)
    args = p.parse_args(argv)
    try:
        from knowledge_base.reading import ReadError

        _ensure_store(args.character)
        settings = load_settings(llm_backend=args.backend, llm_model=args.model, temperature=args.temperature,
                                 max_tokens=args.max_tokens)
        bot = Companion(args.character, mode=args.mode, settings=settings, k=args.k)
        from llm import model_label

        results = []
        for q in args.question:
            if args.json:
                answer = bot.ask(q)
                results.append({"question": q, "answer": answer, "sources": bot.last_sources,
                                "timings": bot.last_timings, "tokens": bot.last_tokens,
                                "model": model_label(bot.llm), "warning": bot.last_warning or None})
            else:
                print(f"\n> {q}", file=sys.stderr)
                for piece in bot.chat(q):
                    print(piece, end="", flush=True)
                print()
                for s in bot.last_sources:
                    print(f"  [{s['n']}] {s['chapter'] or '-'} · {s['source']}", file=sys.stderr)
                if bot.last_warning:
                    print(f"  ({bot.last_warning})", file=sys.stderr)
        if args.json:
            print(json.dumps(results, ensure_ascii=False, indent=1))
        return 0
    except (ChatError, CharacterError, StoreError, ReadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The conversation with one character: retrieve passages, build the prompt, stream the answer.

``Companion(character, mode="reader"|"roleplay")`` keeps the turns of one conversation;
``turn(text)`` yields typed events (events.py): the sources, the answer's text deltas, then
Done with timings and tokens. ``ask(text)`` returns that Done. What goes into the prompt, and
in which order, is prompting.py's; speaking and animating the answer is pipeline.py's.

Over 400 lines on purpose: a turn's steps (retrieve, budgets, memory, world info, the guard, recording)
share the conversation's prefix-cache invariants, which are easier to keep right read in one place.

CLI: ``python ragchat.py CHARACTER -q QUESTION [-q ...] [--mode reader|roleplay] [--json]
[--speak] [--video] [--out DIR] [--user NAME] [--conversation ID|new|last]`` and
``python ragchat.py --list CHARACTER [--user NAME] [--json]`` (see cli.py; saving: conversations/).
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManager, CallbackManagerForRetrieverRun, Callbacks
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

import prompting
from cards.worldinfo import WorldInfo
from characters import Card, CharacterError, has_books, load_card, load_lorebook
from events import Done, Event, Sources, TextDelta
from knowledge_base import excerpts
from knowledge_base.store import Hit, KnowledgeStore, StoreError
from llm.common import REPETITION, merge_stop, steering
from persona.guard import Gate, Rules, trail_off
from persona.strange import OffWorld
from prompting import MODES, Budget, count_tokens, system_prompt, whole_passages  # noqa: F401 (public names)
from settings import Settings, load_settings

MIN_EXCERPTS = 20  # tokens left after the best passage below which no excerpt is worth its "…"
EARLIER_ANSWERS = 3  # her last answers a new one may not repeat word for word (persona/guard.py, Rules.earlier)
# In character her answer is one spoken paragraph, whatever her language or her own prompts.yaml: after a blank
# line, or at a new line opening a parenthesis (the prompt's note after the question), the 1.5B wrote something
# else in 20 of 21 stored answers of sessions 15-18: an essay, her notes, the question again (docs/persona.md).
ONE_PARAGRAPH = ["\n\n", "\n(", "\n（"]


def lead_and_excerpts(question: str, hits: list[Hit], budget: int, per_passage: int, lead: int, lang: str,
                      store: KnowledgeStore) -> list[tuple[Hit, str]]:
    """The best passage whole up to ``lead`` tokens (0: none), then sentence excerpts of the rest
    (knowledge_base/excerpts.py) within what is left of ``budget``. Where the index scored each passage's
    windows, excerpts alone: their scores carry the passages' rank (excerpts.RANK_PRIOR)."""
    lead = 0 if hits and all(h.windows for h in hits) else min(budget, lead, per_passage)
    first = whole_passages(hits[:1], lead, lead, lang) if lead else []
    left = budget - sum(count_tokens(body) for _, body in first)
    picked = excerpts.select(question, hits[len(first):], left, per_passage, count_tokens, store.idf, lang,
                             tokenize=store.tokenize) if left >= MIN_EXCERPTS else []
    return first + [(e.hit, e.text) for e in picked]


class ChatError(RuntimeError):
    """Something the user can fix (no store, no model); the message says how."""


class StoreRetriever(BaseRetriever):
    """A LangChain retriever over a character's live KnowledgeStore (hybrid search).

    It opens the store on every query (KnowledgeStore.open is cached per version), so a conversation
    sees a rebuilt store (a book added, the background upgrade finished) at its next turn."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    character_id: str
    k: int = 4

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun | None = None
    ) -> list[Document]:
        if not KnowledgeStore.exists(self.character_id) and not has_books(self.character_id):
            return []  # a character from a card alone: she talks from her card (and lorebook), no book to cite
        try:
            store = KnowledgeStore.open(self.character_id)
        except StoreError as exc:
            raise ChatError(str(exc)) from exc
        return [Document(page_content=h.text, metadata=h.to_dict()) for h in store.search(query, k=self.k)]


def hit_of(doc: Document) -> Hit:
    return Hit(**doc.metadata)


@dataclass
class Turn:
    question: str
    prompt: str  # what was actually sent for this turn (passages included), replayed verbatim later
    answer: str
    sources: list[dict] = field(default_factory=list)
    lore: list[int] = field(default_factory=list)  # lorebook entries written into ``prompt``
    fired: list[int] = field(default_factory=list)  # lorebook entries that fired (some may be in the head)


def fallback_line(lines: str | list[str] | None, question: str, start: str = "") -> str:
    """The line she says when nothing passed the guard: one of her language's few, chosen by the question
    (the same question, the same line), so a reader asking several strange things does not hear one
    sentence over and over; one that begins with ``start`` (what is already shown) if any does."""
    if not lines:
        return ""
    options = [lines] if isinstance(lines, str) else [str(x) for x in lines]
    options = [x for x in options if x.startswith(start)] or options
    return options[zlib.crc32(question.encode("utf-8")) % len(options)]


def turn_tokens(turn: Turn) -> int:
    """What replaying a turn costs in the prompt: its prompt and its answer."""
    return count_tokens(turn.prompt) + count_tokens(turn.answer)


@dataclass
class PreparedTurn:
    """Everything decided before generation: the exact messages, the sources, the tokens per part."""

    question: str
    messages: list[BaseMessage]
    prompt: str
    prefill: str
    sources: list[dict]
    tokens: dict[str, int]
    warning: str
    retrieve_ms: float
    lore: list[int] = field(default_factory=list)  # entries written into ``prompt``
    fired: list[dict] = field(default_factory=list)  # every entry that fired (Fired.to_dict), for the page
    off_world: OffWorld = field(default_factory=OffWorld)  # the question comes from outside her world
    head: int = 1  # how many of ``messages`` are the static head (Companion.head): its saved state is restored
    world: str = ""  # this turn's world info as written into ``prompt``: copied, its "you" must not be said


class Companion:
    """One conversation with one character."""

    def __init__(
        self,
        character: str | Card,
        mode: str = "reader",
        llm: BaseChatModel | None = None,
        settings: Settings | None = None,
        k: int | None = None,
        budget: Budget | None = None,
        memory: Any = None,
    ) -> None:
        try:
            self.card = character if isinstance(character, Card) else load_card(character)
        except CharacterError as exc:
            raise ChatError(str(exc)) from exc
        self.settings = settings or load_settings()
        self.mode = MODES.create(mode)
        self.budget = budget or Budget()
        self._llm = llm
        self.retriever = StoreRetriever(character_id=self.card.id, k=k or self.mode.k)
        self._k = k
        self.greeting_index = 0  # which of the card's greetings opens the conversation (character cards)
        try:  # a card's lorebook (cards/): its entries enter the prompt when the conversation names them
            book = load_lorebook(self.card.id) if self.card.id else None
        except CharacterError as exc:
            raise ChatError(str(exc)) from exc
        self.world = WorldInfo(book, self.budget.lore, count_tokens, self.card.name,
                               prompting.texts_for(self.card)["labels"]["visitor"], self.card.lang)
        self.history: list[Turn] = []
        self._seen: set[str] = set()  # chunk ids already in the conversation's prompt
        self._first_kept = 0  # index in history of the oldest turn still replayed
        self._costs: list[int] = []  # tokens of each turn in history (replayed prompt + answer)
        # What she remembers about the reader: an object with ``recall(question, budget=, follow_up=,
        # replayed=) -> list[str]`` (conversations.memory.Recall for a saved conversation); None: nothing.
        self.memory = memory
        self._scenes: list[str] | None = None  # her classic scenes for the head (persona/scenes.py), once
        self.last_guard: list[str] = []  # why the last answer was regenerated or continued (persona/guard.py)

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
        """The live version of her store (never cached here: a rebuild must be seen at the next turn)."""
        try:
            return KnowledgeStore.open(self.card.id)
        except StoreError as exc:
            raise ChatError(str(exc)) from exc

    @property
    def k(self) -> int:
        return self.retriever.k

    @property
    def lang(self) -> str:
        return self.card.lang

    def set_mode(self, mode: str) -> None:
        """Switch reader/roleplay; the conversation restarts since the system prompt changes."""
        if mode != self.mode.name:
            self.mode = MODES.create(mode)
            self._scenes = None
            self.retriever = StoreRetriever(character_id=self.card.id, k=self._k or self.mode.k)
            self.reset()

    def reset(self) -> None:
        self.history.clear()
        self._seen.clear()
        self._first_kept = 0
        self._costs = []

    def restore(self, turns: list[Turn]) -> None:
        """Continue a saved conversation: its turns are replayed as they were asked, so the trimming, the
        summary and the passages not to repeat come out as they did live, the prompt prefix is rebuilt
        exactly and llama.cpp's cache fits the next turns again."""
        self.reset()
        for turn in turns:
            self._trim()  # what prepare() did before this turn
            self._record_turn(turn)

    def prepare_prefix(self) -> bool:
        """Save the model's state for this character's prompt head, so first turns skip it (llama.cpp)."""
        prepare = getattr(self.llm, "prepare_prefix", None)
        return bool(prepare and prepare(self.head()))

    def head(self) -> list[BaseMessage]:
        """The prompt's static head: the system prompt, then in role-play her card's example exchanges as the
        conversation's first turns (prompting.example_turns). Its llama.cpp state is saved (prepare_prefix)."""
        messages: list[BaseMessage] = [SystemMessage(self.system())]
        for said, reply in prompting.example_turns(self.card, self.mode, self.budget):
            messages += [HumanMessage(said), AIMessage(reply)]
        return messages

    def system(self) -> str:
        """The prompt's static head (with her lorebook's stable entries, when she has a lorebook, and her
        classic scenes from the book in role-play)."""
        return system_prompt(self.card, self.mode, self.budget, self.world.head(), self.scenes())

    def scenes(self) -> list[str]:
        """Her exchanges from the book for the head, chosen once (cached on disk per book: persona/scenes.py)."""
        if self._scenes is None:
            self._scenes = []
            if self.mode.examples and self.budget.scenes > 0:
                from persona.scenes import head_scenes

                try:
                    self._scenes = head_scenes(self.card, self.budget.scenes)
                except Exception as exc:  # her voice is an extra: a book that fails here still answers
                    import logging

                    logging.getLogger("zhiyin.persona").warning("no classic scenes for %s: %s", self.card.id, exc)
        return self._scenes

    def greeting(self) -> str:
        """Her opening line: the card's greeting, or the alternative the reader picked (``greeting_index``)."""
        options = [g for g in (self.card.greeting, *self.card.greetings) if g]
        if options and 0 <= self.greeting_index < len(options):
            return options[self.greeting_index]
        return prompting.greeting(self.card)

    # ---- prompt ---------------------------------------------------------------------------
    def _passages(self, text: str, hits: list[Hit]) -> list[tuple[Hit, str]]:
        """New passages for this turn (ones already in the conversation are not repeated), within budget."""
        budget = self.budget.followup_passages if self.history else min(self.budget.passages, self.mode.first_passages)
        fresh = [h for h in hits if h.chunk_id not in self._seen]
        if not fresh:
            return []
        if self.mode.excerpts:
            return lead_and_excerpts(text, fresh, budget, self.budget.passage, 0 if self.history else self.budget.lead,
                                     self.lang, self.store)
        return whole_passages(fresh, budget, self.budget.passage, self.lang)

    def _own_lines(self, text: str, hits: list[Hit]) -> list[str]:
        """Lines of hers on this question, within the examples budget: in turn one from the retrieved
        passages (ranked by the hybrid search) and one of her whole book's closest in meaning (USE)."""
        from dialogue import extract_lines  # the same rules that build fine-tuning data
        from persona import scenes

        most = self.mode.lines[1 if self.history else 0]
        budget = self.budget.followup_examples if self.history else self.budget.examples
        if most <= 0 or budget <= 0:
            return []
        found = [x.output.strip() for h in hits for x in extract_lines(h.text, self.card.names, language=self.lang)]
        try:
            near = scenes.nearest_lines(scenes.embed_question(text), scenes.book_voice(self.card), most)
        except Exception:  # no embedder: the passages' lines alone, as before
            near = []
        mixed = [x for pair in zip(found, near, strict=False) for x in pair]
        mixed += found[len(mixed) // 2:] + near[len(mixed) // 2:]
        lines, used = [], 0
        for said in dict.fromkeys(x for x in mixed if x):
            cost = count_tokens(said)
            if used + cost <= budget:
                lines.append(said)
                used += cost
            if len(lines) == most:
                break
        return lines

    def _trim(self) -> None:
        """Drop the oldest turns from the replayed history in one step when it overflows its budget."""
        if len(self._costs) != len(self.history):  # history edited from outside: count again
            self._costs = [turn_tokens(t) for t in self.history]
        start = min(self._first_kept, len(self.history))
        drop = prompting.history_start(self._costs[start:], self.budget)
        if drop:
            self._first_kept = start = start + drop
            # Dropped turns take their passages with them: they may be retrieved again.
            self._seen = {s["chunk_id"] for t in self.history[start:] for s in t.sources}

    def _history_messages(self) -> list[BaseMessage]:
        """Earlier turns, newest kept, verbatim (so the prefix cache still matches), within budget."""
        self._trim()
        msgs: list[BaseMessage] = []
        for turn in self.history[self._first_kept:]:
            msgs += [HumanMessage(turn.prompt), AIMessage(turn.answer)]
        return msgs

    def _summary(self) -> str:
        """The dropped turns in brief (it changes only when another trimming step drops more)."""
        return prompting.summary_block(self.card, self.history[: self._first_kept], self.budget.summary)

    def _memories(self, text: str) -> tuple[list[str], bool]:
        """What the reader told her before that bears on ``text`` and is not in the replayed prompts yet, and
        whether ``text`` asks her to remember something of theirs that those memories answer."""
        if self.memory is None:
            return [], False
        from conversations.memory import asks_about_reader  # here: conversations imports this module

        asked = asks_about_reader(text)
        follow_up = bool(self.history)
        replayed = "\n".join(t.prompt for t in self.history[self._first_kept:])
        # A follow-up's small budget, unless the reader asks what she remembers of them: then the first turn's.
        budget = self.budget.followup_memory if follow_up and not asked else self.budget.memory
        memories = list(self.memory.recall(text, budget=budget, follow_up=follow_up, replayed=replayed))
        return memories, asked and bool(memories)

    def _prefill(self, key: str = "prefill") -> str:
        """The answer's given start in this mode (``key``: which one), if the settings and the backend allow one."""
        if not (self.settings.roleplay_prefill and getattr(self.llm, "supports_prefill", False)):
            return ""
        return self.mode.text(prompting.texts_for(self.card), key, self.card.name)

    def prepare(self, text: str, callbacks: Callbacks = None) -> PreparedTurn:
        """Retrieve and build this turn's messages (ending with the answer's start when there is one)."""
        t0 = time.perf_counter()
        memories, asked = self._memories(text)
        # "Do you remember my name?": answered from what the reader told her; the book would only distract.
        about_reader = self.mode.in_character and asked
        hits = [] if about_reader else [hit_of(d) for d in self.retriever.invoke(text, config={"callbacks": callbacks})]
        passages = self._passages(text, hits)
        lines = self._own_lines(text, hits) if self.mode.examples and not about_reader else []
        history = self._history_messages()
        summary = self._summary()
        head = self.head()
        prefill = self._prefill()
        if about_reader and prefill:
            prefill = self._prefill("memory_prefill") or prefill
        world = self._world(text)
        off = OffWorld() if about_reader else self._off_world(text)
        if off:  # she starts by not taking it up (「我竟…」, "I confess…"); a reader hears the book is silent
            prefill = self._prefill("offworld_prefill") or prefill
        prompt = prompting.turn_prompt(self.card, self.mode, text, passages, lines, prefill, bool(self.history),
                                       world.before, world.after, memories, about_reader=about_reader,
                                       off_world=bool(off))
        # A reader told that the book is silent is shown no passages as the answer's sources.
        shown = [] if off and not self.mode.in_character else passages
        sources = [dict(h.for_sources(), n=n, passage=body) for n, (h, body) in enumerate(shown, 1)]
        tokens = {
            "card": sum(count_tokens(str(m.content)) for m in head),
            "history": sum(count_tokens(str(m.content)) for m in history),
            "passages": sum(count_tokens(b) for _, b in passages),
            "examples": sum(count_tokens(x) for x in lines),
            "question": count_tokens(text),
            "memory": sum(count_tokens(x) for x in memories),
            "summary": count_tokens(summary) if summary else 0,
        }
        if self.world:  # a character with a lorebook: what this turn's world info costs
            tokens["lore"] = sum(f.tokens for f in world.fired)
        # The summary of dropped turns ends the system message: it changes only when older turns are dropped.
        if summary:
            head[0] = SystemMessage(f"{head[0].content}\n\n{summary}")
        messages = [*head, *history, HumanMessage(prompt)]
        if prefill:
            messages.append(AIMessage(prefill))
        return PreparedTurn(text, messages, prompt, prefill, sources, tokens,
                            "" if hits or about_reader else "no passage matched this question",
                            round((time.perf_counter() - t0) * 1000, 1), world.rendered,
                            [f.to_dict() for f in world.fired], off, len(head),
                            "\n".join(p for p in (world.before, world.after) if p))

    def _world(self, text: str):  # -> cards.worldinfo.TurnInfo
        """This turn's world info: the recent messages (her greeting first) scanned; entries still in the
        replayed turns are not written again (call after _history_messages, which settles those turns)."""
        recent = [self.greeting()] + [m for t in self.history for m in (t.question, t.answer)] + [text]
        kept = self.history[min(self._first_kept, len(self.history)):]
        return self.world.turn(recent, 1 + len(self.history), present={i for t in kept for i in t.lore},
                               fired_before={i for t in self.history for i in t.fired})

    def build_messages(self, text: str) -> tuple[list[BaseMessage], str, list[dict], dict[str, int]]:
        """The messages for this turn, its own prompt, its sources and tokens per part (nothing is sent)."""
        p = self.prepare(text)
        return p.messages, p.prompt, p.sources, p.tokens

    # ---- the conversation -----------------------------------------------------------------
    def turn(self, text: str, callbacks: Callbacks = None, **sampling: Any) -> Iterator[Event]:
        """Answer ``text``: Sources, then the answer's TextDeltas, then Done.

        ``callbacks`` (LangChain handlers) see the turn as one chain run with retrieval and generation
        inside it. ``sampling`` (temperature, top_p, max_tokens, stop) overrides the settings for this turn.
        A failed generation records nothing; an answer the reader stopped early is kept as shown."""
        text = text.strip()
        if not text:
            return
        t0 = time.perf_counter()
        run = CallbackManager.configure(inheritable_callbacks=callbacks).on_chain_start(
            None, {"question": text}, name="zhiyin_turn")
        try:
            prepared = self.prepare(text, callbacks=run.get_child())
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        yield Sources(prepared.sources, prepared.warning, [f"{f['label']} ({f['reason']})" for f in prepared.fired])
        answer: list[str] = [prepared.prefill] if prepared.prefill else []
        first = shown = None
        ok = False
        try:
            if prepared.prefill:
                yield TextDelta(prepared.prefill)  # shown at once; timings wait for the model's own first token
            restore = getattr(self.llm, "restore_prefix", None)
            if restore is not None and not self.history:  # a first turn: load her prompt head's saved state
                restore(prepared.messages[:prepared.head])
            for piece in self._guarded(prepared, text, run, sampling):
                if piece is None:  # the model's first token, before the guard lets text through
                    first = first or time.perf_counter()
                    continue
                shown = shown or time.perf_counter()
                answer.append(piece)
                yield TextDelta(piece)
            ok = True
        except GeneratorExit:
            ok = True  # the reader stopped it: what was shown is part of the conversation
            run.on_chain_end({"answer": "".join(answer).strip(), "stopped": True})
            raise
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        finally:
            if ok:
                self._record(prepared, "".join(answer).strip())
        end = time.perf_counter()
        full = "".join(answer).strip()
        run.on_chain_end({"answer": full})
        timings = {"retrieve_ms": prepared.retrieve_ms,
                   "first_token_ms": round(((first or end) - t0) * 1000, 1),
                   # In character the guard shows whole sentences only: the reader's first word comes later.
                   "first_shown_ms": round(((shown or end) - t0) * 1000, 1),
                   "total_ms": round((end - t0) * 1000, 1)}
        from llm import model_label

        yield Done(full, prepared.sources, timings, prepared.tokens, prepared.warning, model_label(self.llm))

    def _guard_words(self) -> dict[str, Any]:
        """``guard`` of her language's prompt texts (her own prompts.yaml may replace parts of it)."""
        return prompting.texts_for(self.card).get("guard") or {}

    def _era(self) -> bool:
        """Her world is guarded: in character, and her card says when she lives."""
        return self.mode.in_character and bool(self.card.era.strip())

    def _judges_world(self) -> bool:
        """Questions are told off-world (persona/strange.py): her card says when she lives, and this mode is
        in character or says what to do then (a reader asking about 高铁 hears the book does not tell of it)."""
        texts = prompting.texts_for(self.card)
        return bool(self.card.era.strip()) and (self.mode.in_character or bool(self.mode.text(texts, "offworld_reminder", "")))

    def warm(self) -> None:
        """Load what her first turn would wait for: her book's other people (~2 s for 红楼梦), and where her
        world is judged its words (persona/strange.py)."""
        if self.mode.in_character:
            self._others()
        if self._judges_world():
            from persona import strange

            strange.warm(self.card, tuple(self._guard_words().get("offworld_questions") or ()))

    def _off_world(self, text: str) -> OffWorld:
        """Whether the question comes from outside her world (persona/strange.py)."""
        if not self._judges_world():
            return OffWorld()
        from persona import strange

        words = self._guard_words()
        return strange.judge(text, self.lang, tuple(words.get("modern") or ()), strange.book_vocabulary(self.card),
                             tuple(words.get("offworld_questions") or ()), names=tuple(self.card.names),
                             things_only=not self.mode.in_character)

    def _rules(self, text: str, head: str = "", off: OffWorld | None = None, world: str = "") -> Rules:
        """What this turn's answer must not do (persona/guard.py): loops and code in any mode; echoes, her
        era's words, assistant talk and her own name as someone else's in character ("Miss Bennet" may be
        Jane). A question from outside her world adds its strange words (高铁, Netflix); a book that writes
        no figures, any figure."""
        words = self._guard_words()
        era = self._era()
        own = self.mode.in_character  # a reader's answer may well restate the question, or name her
        # An off-world question's strange words, or the things an ordinary one names that her book never does.
        modern = tuple(dict.fromkeys([*(words.get("modern") or ()), *(off.words if off is not None else ())])) if era else ()
        figures, unknown = True, None
        if era:
            from persona.strange import book_vocabulary, unknown_words

            vocab = book_vocabulary(self.card)
            figures = vocab is None or vocab.figures
            if off and vocab is not None:
                unknown = unknown_words(vocab, tuple(self.card.names))
        return Rules(self.lang, text, modern,
                     tuple(words.get("assistant") or ()) if own else (), echo=own, head=head if own else "",
                     names=tuple(n for n in self.card.names if not n.startswith(("Miss ", "Mr", "Mrs"))) if own else (),
                     others=self._others if own else None,
                     latin=era and self.lang == "zh", cjk=era and self.lang == "en", figures=figures, unknown=unknown,
                     tone=self._tone() if own else None, world=world if own else "",
                     earlier=tuple(t.answer for t in self.history[-EARLIER_ANSWERS:] if t.answer))

    def _others(self) -> tuple[str, ...]:
        """Her book's other people and places (its most frequent proper nouns, hers left out; mined once per
        store version, as for the microphone): she never says she is one of them."""
        from voice.priming import book_terms

        return tuple(book_terms(self.card))

    def _tone(self) -> Callable[[str], bool] | None:
        """Her guard's test of a sentence's meaning against an assistant's (persona/tone.py), or None."""
        from persona import tone

        bank = tuple(self._guard_words().get("assistant_sentences") or ())
        return tone.judge(bank) if bank else None

    def _guarded(self, prepared: PreparedTurn, text: str, run: Any, sampling: dict[str, Any]) -> Iterator[str | None]:
        """The answer's text as the guard lets it through (None marks the model's first token).

        Sampling carries this mode's repetition control and the words of the modern world to steer away
        from. An answer that trips the guard before anything of it was shown is regenerated once with other
        dice; one that trips later is continued once from what was shown (or ends there, on a backend that
        cannot continue an answer). If nothing passes, she says the card's language's fallback line."""
        # Her answer recites neither her prompt's head nor a turn's reminder.
        head = "\n".join([*(str(m.content) for m in prepared.messages[:prepared.head]),
                          *prompting.reminders(self.card, self.mode)])
        rules = self._rules(text, head, prepared.off_world, prepared.world)
        sampling.setdefault("temperature", float(getattr(self.settings, self.mode.temperature_setting)))
        cap = getattr(self.llm, "max_tokens", None) or self.settings.max_tokens  # the model's own cap, if any
        sampling.setdefault("max_tokens", min(self.mode.max_tokens, int(cap)))
        avoid = rules.modern if rules.figures else (*rules.modern, *"0123456789")
        kwargs = steering(self.llm, REPETITION.get(self.mode.name), avoid) | sampling
        if self.mode.in_character:  # she ends where the model starts writing the prompt's next part
            kwargs["stop"] = merge_stop(self._guard_words().get("stop"), ONE_PARAGRAPH, sampling.get("stop"))
        messages, said = prepared.messages, prepared.prefill
        self.last_guard = []
        for attempt in range(2):
            gate = Gate(rules, before=said, continuing=said != prepared.prefill)
            finish = ""
            stream = self.llm.stream(messages, config={"callbacks": run.get_child()}, **kwargs)
            try:
                for chunk in stream:
                    finish = (chunk.response_metadata or {}).get("finish_reason") or finish
                    piece = chunk.content if isinstance(chunk.content, str) else ""
                    if not piece:
                        continue
                    yield None
                    out = gate.feed(piece)
                    if out:
                        said += out
                        yield out
                    if gate.reason:
                        break
            finally:
                stream.close()  # stops llama.cpp generating what the guard refused
            out = gate.close(cut_off=finish == "length")
            if out:
                said += out
                yield out
            if not gate.reason and prepared.prefill and not said[len(prepared.prefill):].strip():
                gate.reason = "empty: nothing after the given start"  # 「书里没有写到」 alone was shown once
            if not gate.reason:
                return
            self.last_guard.append(gate.reason)
            if attempt or (said != prepared.prefill and not getattr(self.llm, "supports_prefill", False)):
                break
            seed = kwargs.get("seed", getattr(self.llm, "seed", None))
            kwargs["seed"] = (int(seed) if seed is not None else 0) + 1  # other dice, the same prompt
            if said != prepared.prefill:  # continue what was shown, as the answer's given start
                base = prepared.messages[:-1] if prepared.prefill else prepared.messages
                messages = [*base, AIMessage(said)]
        if said.strip() != prepared.prefill.strip():
            tail = trail_off(said, self.lang)  # the guard stopped it mid-sentence: it trails off
        else:  # nothing passed: she does not understand (the line starts with the given start, if any)
            words = self._guard_words()
            own = prepared.off_world and self.mode.text(prompting.texts_for(self.card), "offworld_fallback", self.card.name)
            lines = own or (prepared.off_world and words.get("offworld_fallback")) or words.get("fallback")
            fallback = fallback_line(lines, text, prepared.prefill)
            tail = fallback[len(prepared.prefill):] if fallback.startswith(prepared.prefill) else fallback
        if tail:
            yield tail

    def _record(self, prepared: PreparedTurn, answer: str) -> None:
        self._record_turn(Turn(prepared.question, prepared.prompt, answer, prepared.sources, prepared.lore,
                               [f["index"] for f in prepared.fired]))

    def _record_turn(self, turn: Turn) -> None:
        if len(self._costs) != len(self.history):
            self._costs = [turn_tokens(t) for t in self.history]
        self.history.append(turn)
        self._costs.append(turn_tokens(turn))
        self._seen |= {s["chunk_id"] for s in turn.sources}

    def chat(self, text: str) -> Iterator[str]:
        """Only the answer's text, streamed (for scripts)."""
        for event in self.turn(text):
            if isinstance(event, TextDelta):
                yield event.text

    def ask(self, text: str, **sampling: Any) -> Done:
        """The whole turn at once: the answer with its sources, timings and tokens."""
        done = None
        for event in self.turn(text, **sampling):
            if isinstance(event, Done):
                done = event
        if done is None:  # an empty question
            return Done("", [], {}, {}, "empty question")
        return done

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


def main(argv: list[str] | None = None) -> int:
    from cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())

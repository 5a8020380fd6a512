"""World info for one conversation: the lorebook's entries placed for llama.cpp's prefix cache.

llama.cpp reuses the longest unchanged prefix of a prompt. So world info is split in two:

- the *stable* entries (constants whose firing does not depend on the turn) are decided once per
  conversation and go into the system head, where the card's position puts them;
- every other entry that fires goes into *this turn's own message* (the part that is new anyway), once:
  an entry still present in a replayed earlier turn is not repeated. A turn that fires nothing new
  leaves the whole prefix (head and history) unchanged.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from cards import lorebook
from cards.lorebook import Book, Fired, Scan

LABELS = {"zh": "【背景设定】", "en": "[World info]"}


@dataclass
class TurnInfo:
    """World info for one turn: text for the start of the turn's message, text after the question
    (``@@depth 0``: "after the most recent message"), and every entry that fired (for the page)."""

    before: str = ""
    after: str = ""
    fired: list[Fired] = field(default_factory=list)
    rendered: list[int] = field(default_factory=list)  # entry indices written into this turn's message


class WorldInfo:
    """One conversation's use of a lorebook (the pure functions of ``cards.lorebook`` plus placement)."""

    def __init__(self, book: Book | dict | None, budget_tokens: int, count_tokens: Callable[[str], int],
                 char: str, user: str, lang: str = "en", greeting: int = 0) -> None:
        self.book = book if isinstance(book, Book) else lorebook.parse(book)
        self.budget = budget_tokens
        self.count = count_tokens
        self.scan = Scan(char=char, user=user, greeting=greeting)
        self.label = LABELS.get(lang, LABELS["en"])
        self._head: list[Fired] | None = None

    def __bool__(self) -> bool:
        return bool(self.book.entries)

    def head_entries(self) -> list[Fired]:
        """The stable entries, decided once (their budget comes first: the head must not change)."""
        if self._head is None:
            self._head = lorebook.activate(self.book, [], self.budget, self.count, self.scan,
                                           only=lambda e: e.stable)
        return self._head

    def head(self) -> dict[str, str]:
        """Head text per place: ``before_desc`` (also the default), ``after_desc``, ``personality``, ``scenario``."""
        places: dict[str, list[Fired]] = {}
        for f in self.head_entries():
            places.setdefault(f.entry.position or "before_desc", []).append(f)
        return {place: lorebook.render(fired) for place, fired in places.items()}

    def turn(self, recent: Sequence[str], char_messages: int, present: Collection[int] = (),
             fired_before: Collection[int] = ()) -> TurnInfo:
        """The entries firing for this turn (``recent``: messages oldest first, the question last).

        ``present``: entries already in the replayed history (not written again); ``fired_before``: entries
        that fired on any earlier turn (for ``@@keep_activate_after_match`` and its opposite).
        """
        head = self.head_entries()
        head_ids = {f.entry.index for f in head}
        left = max(self.budget - sum(f.tokens for f in head), 0)
        scan = Scan(self.scan.char, self.scan.user, char_messages, self.scan.greeting, fired_before)
        fired = lorebook.activate(self.book, recent, left, self.count, scan,
                                  only=lambda e: e.index not in head_ids)
        new = [f for f in fired if f.entry.index not in present]
        after = [f for f in new if f.depth is not None and f.depth < 1]
        before = [f for f in new if f not in after]
        return TurnInfo(before=lorebook.render(before, self.label), after=lorebook.render(after),
                        fired=[*head, *fired], rendered=[f.entry.index for f in new])


def fired_markdown(fired: Sequence[dict]) -> str:
    """The entries that fired for an answer, one line each, for the page (``Fired.to_dict()`` items)."""
    return "\n".join(f"- **{f['label']}** ({f['reason']}, {f['tokens']} tokens): {f['text'][:160]}"
                     + ("…" if len(f["text"]) > 160 else "") for f in fired)

"""World info: which lorebook entries fire for the recent turns, within a token budget, and where they go.

The lorebook is the card's ``character_book`` as the specs define it (V2 spec_v2.md, V3 SPEC_V3.md): an
entry fires when one of its ``keys`` appears in the last ``scan_depth`` messages (and, when ``selective``,
one of its ``secondary_keys`` too), or always when ``constant``; case-insensitive unless ``case_sensitive``;
``use_regex`` makes the keys patterns. Over the token budget the lowest ``priority`` goes first; what is
kept is ordered by ``insertion_order``. V3 decorators in the content (``@@depth``, ``@@position``,
``@@activate_only_after`` ...) are read and trimmed. Pure functions: no prompt, no files.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from cards.spec import resolve

DEFAULT_SCAN_DEPTH = 2  # the question and her last answer (SillyTavern's default too) when a book names none
MAX_RECURSION = 3  # passes over newly fired content when the book asks for recursive scanning
# Decorators this module acts on; any other is ignored (and its @@@fallback considered), as V3 says.
# @@instruct_depth and friends are for non-chat prompts, so a chat ignores them.
KNOWN = {"activate_only_after", "activate_only_every", "keep_activate_after_match", "dont_activate_after_match",
         "depth", "scan_depth", "is_greeting", "position", "ignore_on_max_context", "additional_keys",
         "exclude_keys", "dont_activate", "activate", "role", "disable_ui_prompt"}
NUMERIC = {"activate_only_after", "activate_only_every", "depth", "scan_depth", "is_greeting"}
NO_VALUE = {"keep_activate_after_match", "dont_activate_after_match", "ignore_on_max_context", "dont_activate",
            "activate"}
REPEATABLE = {"additional_keys"}
POSITIONS = {"before_char": "before_desc", "after_char": "after_desc", "before_desc": "before_desc",
             "after_desc": "after_desc", "personality": "personality", "scenario": "scenario"}
TURN_DEPENDENT = {"activate_only_after", "activate_only_every", "keep_activate_after_match",
                  "dont_activate_after_match"}
# SillyTavern writes `use_regex: true` on every entry it exports, though its keys are plain text unless
# written /like this/. An entry carrying SillyTavern's own extensions is read the way SillyTavern means it
# (otherwise its constants and secondary keys would be ignored, as V3 says for regex entries).
SILLYTAVERN_MARKERS = {"selectiveLogic", "useProbability", "probability", "display_index", "exclude_recursion"}


@dataclass
class Entry:
    """One lorebook entry, read leniently (cards in the wild leave fields out or give them odd types)."""

    index: int  # its place in the book's entries (the id the rest of the app uses)
    keys: list[str]
    content: str  # decorators trimmed
    enabled: bool = True
    insertion_order: float = 0
    case_sensitive: bool = False
    use_regex: bool = False
    constant: bool = False
    selective: bool = False
    secondary_keys: list[str] = field(default_factory=list)
    priority: float | None = None
    position: str = ""  # before_desc | after_desc | personality | scenario | "" (V2 position or @@position)
    label: str = ""  # name or comment, for the page
    logic: int = 0  # SillyTavern's selectiveLogic: 0 AND ANY, 1 NOT ALL, 2 NOT ANY, 3 AND ALL
    slash_regex: bool = False  # SillyTavern's keys: plain text, or a regex when written /pattern/flags
    whole_words: bool = False  # SillyTavern's match_whole_words
    decorators: dict[str, list[str]] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.decorators

    def number(self, name: str) -> int | None:
        return int(float(self.decorators[name][0])) if name in self.decorators else None

    @property
    def rank(self) -> float:
        """What the budget cut keeps: ``priority``, else ``insertion_order`` (V3: lowest removed first)."""
        return self.priority if self.priority is not None else self.insertion_order

    @property
    def stable(self) -> bool:
        """Fires on every turn of a conversation, whatever is said: a constant with no turn-counting decorator."""
        return (self.enabled and (self.constant and not self.use_regex or self.has("activate"))
                and not (self.has("dont_activate") and not self.has("activate"))
                and not TURN_DEPENDENT & set(self.decorators))


@dataclass
class Book:
    entries: list[Entry]
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive: bool = False


@dataclass
class Fired:
    """An entry that fired this turn: why, and the text that enters the prompt."""

    entry: Entry
    text: str  # content with macros resolved
    reason: str  # "constant", "always (@@activate)" or the key that matched
    tokens: int = 0

    @property
    def depth(self) -> int | None:
        return self.entry.number("depth")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.entry.index, "label": self.entry.label or f"entry {self.entry.index}",
                "reason": self.reason, "tokens": self.tokens, "text": self.text}


@dataclass
class Scan:
    """What activation needs to know about the conversation besides its recent messages."""

    char: str = ""  # {{char}}
    user: str = ""  # {{user}}
    char_messages: int = 0  # the character's messages so far (the greeting counts), for @@activate_only_*
    greeting: int = 0  # the greeting in use: 0 first_mes, n the n-th alternate greeting (@@is_greeting)
    fired_before: Collection[int] = ()  # entries that fired on earlier turns (@@*_after_match)


# ------------------------------------------------------------------------------------- parsing
def _num(value: Any, default: float | None = 0) -> float | None:
    if isinstance(value, bool) or value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):  # V3 describes secondary_keys as "values separated by a comma"
        value = value.split(",")
    return [str(v).strip() for v in value if v is not None and str(v).strip()] if isinstance(value, list) else []


def parse_decorators(content: str) -> tuple[dict[str, list[str]], str]:
    """(decorators, content without them). ``@@@name`` lines are fallbacks of the decorator above them,
    used only when it is not one this module knows (or its value is not valid)."""
    chosen: dict[str, list[str]] = {}
    kept_lines, chain_done = [], True
    for line in content.splitlines():
        stripped = line.strip()
        if not stripped.startswith("@@"):
            kept_lines.append(line)
            continue
        fallback = stripped.startswith("@@@")
        if fallback and chain_done:
            continue  # the decorator this falls back from was used
        name, _, value = stripped.lstrip("@").partition(" ")
        name, value = name.strip().lower(), value.strip()
        ok = name in KNOWN and _valid(name, value) and (name in REPEATABLE or name not in chosen)
        if ok:
            chosen.setdefault(name, []).append(value)
        chain_done = ok
    text = "\n".join(kept_lines).strip("\r\n")
    return chosen, text


def _valid(name: str, value: str) -> bool:
    if name in NUMERIC:
        return _num(value, None) is not None
    if name in NO_VALUE:
        return True
    return bool(value)


def parse(book: dict | None) -> Book:
    """A ``character_book`` object (V2 or V3) as a Book; entries that are not objects are skipped."""
    if not isinstance(book, dict):
        return Book([])
    entries = []
    for i, raw in enumerate(book.get("entries") or []):
        if not isinstance(raw, dict):
            continue
        ext = raw.get("extensions") if isinstance(raw.get("extensions"), dict) else {}
        decorators, content = parse_decorators(str(raw.get("content") or ""))
        position = POSITIONS.get(decorators.get("position", [""])[0]) or POSITIONS.get(str(raw.get("position")), "")
        label = str(raw.get("name") or raw.get("comment") or "").strip()
        logic = int(_num(ext.get("selectiveLogic"), 0) or 0)
        tavern = bool(SILLYTAVERN_MARKERS & set(ext))
        if tavern and _num(ext.get("scan_depth"), None) is not None and "scan_depth" not in decorators:
            decorators["scan_depth"] = [str(ext["scan_depth"])]
        entries.append(Entry(
            index=i, keys=_strings(raw.get("keys")), content=content, enabled=raw.get("enabled", True) is not False,
            insertion_order=_num(raw.get("insertion_order"), 0) or 0,
            case_sensitive=bool(raw.get("case_sensitive") if raw.get("case_sensitive") is not None
                                else ext.get("case_sensitive")),
            use_regex=raw.get("use_regex") is True and not tavern, constant=raw.get("constant") is True,
            selective=raw.get("selective") is True, secondary_keys=_strings(raw.get("secondary_keys")),
            priority=_num(raw.get("priority"), None), position=position, label=label,
            logic=logic if logic in (0, 1, 2, 3) else 0, slash_regex=tavern, whole_words=ext.get("match_whole_words") is True,
            decorators=decorators))
    depth = _num(book.get("scan_depth"), None)
    budget = _num(book.get("token_budget"), None)
    return Book(entries, int(depth) if depth is not None and depth >= 0 else None,
                int(budget) if budget is not None and budget > 0 else None, book.get("recursive_scanning") is True)


# ------------------------------------------------------------------------------------ matching
_REGEX_LITERAL = re.compile(r"^/(.+)/([a-z]*)$", re.S)


def _pattern(key: str, case_sensitive: bool) -> re.Pattern | None:
    """A key of a ``use_regex`` entry: ``/pattern/flags`` or a bare pattern; None when it does not compile."""
    m = _REGEX_LITERAL.match(key)
    body, flags = (m.group(1), m.group(2)) if m else (key, "")
    bits = 0 if case_sensitive and "i" not in flags else re.I
    bits |= (re.M if "m" in flags else 0) | (re.S if "s" in flags else 0)
    try:
        return re.compile(body, bits)
    except re.error:
        return None


def _found(keys: Sequence[str], text: str, entry: Entry) -> str | None:
    """The first key that occurs in ``text`` (a pattern that matches, for regex entries)."""
    for key in keys:
        if entry.use_regex or (entry.slash_regex and _REGEX_LITERAL.match(key)):
            pat = _pattern(key, entry.case_sensitive)
            if pat is not None and pat.search(text):
                return key
        elif entry.whole_words and re.fullmatch(r"\w+", key) and not re.search(r"[\u3000-\u9fff]", key):
            if re.search(rf"\b{re.escape(key)}\b", text, 0 if entry.case_sensitive else re.I):
                return key
        elif (key in text) if entry.case_sensitive else (key.casefold() in text.casefold()):
            return key
    return None


def _count_found(keys: Sequence[str], text: str, entry: Entry) -> int:
    return sum(1 for k in keys if _found([k], text, entry))


def _window(recent: Sequence[str], entry: Entry, book: Book) -> str:
    depth = entry.number("scan_depth")
    depth = depth if depth is not None else book.scan_depth if book.scan_depth is not None else DEFAULT_SCAN_DEPTH
    return "\n".join(recent[-depth:]) if depth > 0 else ""


def _match(entry: Entry, text: str, scan: Scan) -> str | None:
    """Why ``entry`` fires on ``text`` (a reason), or None."""
    d = entry.decorators
    if not entry.enabled or not entry.content.strip():
        return None  # an empty content adds nothing, so it never counts as fired either
    before = entry.index in scan.fired_before
    if "activate" in d:
        return "always (@@activate)"
    if "dont_activate" in d or ("dont_activate_after_match" in d and before):
        return None
    if "activate_only_after" in d and scan.char_messages < entry.number("activate_only_after"):
        return None
    every = entry.number("activate_only_every")
    if every and scan.char_messages % every:
        return None
    if "is_greeting" in d and entry.number("is_greeting") != scan.greeting:
        return None
    if "keep_activate_after_match" in d and before:
        return "matched before (@@keep_activate_after_match)"
    if entry.constant and not entry.use_regex:
        return "constant"
    keys = [resolve(k, scan.char, scan.user) for k in entry.keys]
    key = _found(keys, text, entry)
    if key is None:
        return None
    if entry.selective and entry.secondary_keys and not entry.use_regex:
        second = [resolve(k, scan.char, scan.user) for k in entry.secondary_keys]
        hits = _count_found(second, text, entry)
        ok = {0: hits > 0, 1: hits < len(second), 2: hits == 0, 3: hits == len(second)}[entry.logic]
        if not ok:
            return None
    for extra in d.get("additional_keys", []):
        if not _found(_strings(extra), text, entry):
            return None
    if not entry.use_regex and any(_found(_strings(x), text, entry) for x in d.get("exclude_keys", [])):
        return None
    return f"key '{key}'"


def activate(book: Book | dict, recent: Sequence[str], budget_tokens: int | None,
             count_tokens: Callable[[str], int], scan: Scan | None = None,
             only: Callable[[Entry], bool] | None = None) -> list[Fired]:
    """The entries that fire for ``recent`` (messages, oldest first, the current one last), cut to the
    budget (the smaller of ``budget_tokens`` and the book's ``token_budget``) by priority, in insertion order.

    ``only`` restricts which entries are considered (e.g. the stable constants of a prompt's head).
    """
    book = book if isinstance(book, Book) else parse(book)
    scan = scan or Scan()
    candidates = [e for e in book.entries if only is None or only(e)]
    fired: dict[int, Fired] = {}
    extra = ""  # fired content scanned again when the book is recursive
    for _ in range(MAX_RECURSION + 1 if book.recursive else 1):
        new = False
        for entry in candidates:
            if entry.index in fired:
                continue
            text = _window(recent, entry, book) + ("\n" + extra if extra else "")
            reason = _match(entry, text, scan)
            if reason:
                content = resolve(entry.content, scan.char, scan.user).strip()
                fired[entry.index] = Fired(entry, content, reason, count_tokens(content))
                new = True
        if not new:
            break
        extra = "\n".join(f.text for f in fired.values())
    budgets = [b for b in (budget_tokens, book.token_budget) if b is not None]
    kept = _cut(list(fired.values()), min(budgets)) if budgets else list(fired.values())
    return sorted(kept, key=lambda f: (f.entry.insertion_order, f.entry.index))


def _cut(fired: list[Fired], budget: int) -> list[Fired]:
    """Keep the highest ranks that fit; @@ignore_on_max_context entries are the first to go."""
    order = sorted(fired, key=lambda f: (not f.entry.has("ignore_on_max_context"), f.entry.rank, -f.entry.index),
                   reverse=True)
    kept, used = [], 0
    for f in order:
        if used + f.tokens <= budget:
            kept.append(f)
            used += f.tokens
    return kept


# ------------------------------------------------------------------------------------ rendering
def render(fired: Sequence[Fired], label: str = "") -> str:
    """The fired entries' texts as one block (in the order given), under ``label`` when there is one."""
    body = "\n\n".join(f.text for f in fired if f.text)
    return f"{label}\n{body}" if body and label else body

"""What a role-play answer must not do, checked sentence by sentence while it streams.

A small model echoes the question (「我冷不冷？」), loops until the token limit (「我想去扬州，我想去苏州，
我想去…」), reaches for the modern world (张家界, Python, "I am not an AI") or turns into an assistant
(code blocks, "How can I help"). Sampling penalties and logit bias make these rarer (llm/); this is
the net behind them. ``Gate`` holds back each sentence until it is complete, so a sentence that trips
a rule is never shown: when nothing but the answer's given start has been shown, the answer is
regenerated once (ragchat.Companion.turn); later, the answer ends before the fault.

The rules are pure functions; the words per language live in prompts/<lang>.yaml (``guard``), which
a character may override (a modern character wants no list of modern words).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from sentences import ABBREV, SENT_END

# Garbled text: stacked combining marks (the 1.5B once ended a sentence in a run of strike-through and
# accent marks over spaces). One accent is a letter (café written with U+0301); two or more on one letter
# are never a word of hers in either language.
GARBLED = re.compile(r"[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]{2,}")
# Code, and the markdown and LaTeX an assistant dresses answers in (**步骤**, \(x^2\)): never hers.
_CODE = re.compile(r"```|^\s*(?:def|class|import|from|for|while|return|print)\b.*[:(]|\w+\s*=\s*\w+\(|\[::-1\]|"
                   r"\bfunction\s+\w+\s*\(|console\.log|#include|\*\*\S|\\\(|\\frac|\^\d", re.M)


def units(text: str, lang: str) -> list[str]:
    """Characters (Chinese, punctuation dropped) or lowercased words (English)."""
    if lang == "zh":
        return [c for c in text if re.match(r"\w", c)]
    return re.findall(r"[a-z']+", text.lower())


def loop_at(text: str, lang: str, n: int = 3, times: int = 3) -> int:
    """Where a span of ``n`` units begins its ``times``-th repeat, as an offset in ``text`` (-1: no loop).

    Three repeats, not four: the gate stops a loop before it becomes the 4+ a reader notices."""
    if lang == "zh":
        pos = [m.start() for m in re.finditer(r"\w", text)]
        seq = [text[p] for p in pos]
    else:
        found = list(re.finditer(r"[A-Za-z']+", text))
        pos, seq = [m.start() for m in found], [m.group(0).lower() for m in found]
    seen: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(seq) - n + 1):
        starts = seen.setdefault(tuple(seq[i:i + n]), [])
        if starts and i - starts[-1] < n:
            continue  # 哈哈哈哈: an overlapping run is one laugh, not a loop
        starts.append(i)
        if len(starts) >= times:
            return pos[starts[1]]  # keep the first saying of it, drop from the first repeat on
    return -1


def _swap_person(text: str, lang: str) -> str:
    if lang == "zh":
        return re.sub("[你您]", "我", text)
    return re.sub(r"\b(?:you|i)\b", "i", re.sub(r"\byour\b", "my", text.lower()))


def echoes(answer: str, question: str, lang: str, whole: bool = False) -> bool:
    """The answer says the question back: no longer than it, and either (almost) nothing in it is new (我冷，我冷。,
    我冷不冷) or it asks the question again in its words (Am I cold?). "我最喜欢潇湘馆的翠竹。" is an
    answer (翠竹 is new); so is "I do." (too short to be anything else). ``whole``: kept for callers that
    know the answer is complete; the rule is the same."""
    a, q = units(_swap_person(answer, lang), lang), units(_swap_person(question, lang), lang)
    # A word more is still the question (你想要念扬州的家吗？ for 你想念扬州的家吗？).
    if len(a) < 3 or not q or len(a) > max(len(q), 4) * (1.2 if lang == "zh" else 1.3):
        return False
    new = sum(u not in set(q) for u in a) / len(a)
    if new < 0.1:
        return True
    if lang == "zh":
        grams, known = [tuple(a[i:i + 2]) for i in range(len(a) - 1)], {tuple(q[i:i + 2]) for i in range(len(q) - 1)}
        said_back = sum(g in known for g in grams) / len(grams)
    else:
        said_back = 1 - new
    # Or asks it back with a word or two changed (我近来经常哭泣吗？ for 你近来还常常哭吗？): in every stored bench
    # answer (session 12) the questions back with at most a quarter new were echoes, three of them.
    return answer.rstrip().endswith(("？", "?")) and (said_back >= 0.5 or new <= 0.25)


_PERSON_EN = re.compile(r"^(?:you|your|i|my|me)$", re.I)


def asked_again(text: str, question: str, lang: str) -> int:
    """Where ``text`` says the whole question again, word for word or with its "you" turned to "I"
    (宝玉挨打以后，我去看他了吗？), -1 where it does not. A short question ("How so?", 你好吗) may well be
    said inside an answer of hers."""
    q = question.strip().rstrip("？?。.!！ ")
    if len(units(q, lang)) < (6 if lang == "zh" else 4):
        return -1
    if lang == "zh":  # 你/您 -> 我 keeps every offset
        return _swap_person(text, lang).find(_swap_person(q, lang))
    words = [r"(?:you|your|i|my|me)" if _PERSON_EN.match(w) else re.escape(w) for w in q.split()]
    found = re.search(r"\s+".join(words), text, re.I)
    return found.start() if found else -1


@lru_cache(maxsize=4096)
def _word_pattern(w: str) -> re.Pattern[str]:
    """How a guarded word is found: a Latin word whole (AI, not "said"), with its plural (aeroplanes) and,
    when long, without its last letter (with " France" banned while sampling, the model wrote "Franc");
    a Chinese word as a substring."""
    if not re.search(r"[A-Za-z]", w):
        return re.compile(re.escape(w))
    body = re.escape(w[:-1]) + re.escape(w[-1]) + ("?" if len(w) >= 5 and w.isalpha() else "")
    return re.compile(rf"(?<![A-Za-z]){body}(?:s|es)?(?![A-Za-z])", 0 if w.isupper() else re.I)


def modern_words(text: str, words: Iterable[str]) -> list[str]:
    """The words of ``words`` in ``text`` (as :func:`_word_pattern` finds them)."""
    return [w for w in words if _word_pattern(w).search(text)]


def first_word_at(text: str, words: Iterable[str]) -> int:
    """Where the first of ``words`` found in ``text`` starts (-1: none)."""
    return min((m.start() for w in words for m in [_word_pattern(w).search(text)] if m), default=-1)


# A script's speaker tag: the answer turns narrator (紫鹃道：“姑娘…” / "…," said Jane.), copying the book's form.
_NARRATION = {"zh": re.compile(r"[\u4e00-\u9fff]{1,4}(?:笑|冷笑|叹|忙|又|便|因|听了)?(?:道|说道|问道)[：:]\s*[“\"「]"),
              "en": re.compile(r"[,.!?]\"\s+(?:said|cried|replied|returned|answered|added)\s+(?:[A-Z][a-z]+|he|she)\b")}
# A script's line: a new line opening with a speaker's label (来访人：…, Visitor: …): the model writes both parts.
_LABEL = {"zh": r"\s*(?P<who>[\u4e00-\u9fff]{1,4})\s*[：:]", "en": r"\s*(?P<who>[A-Z][A-Za-z]{0,12})\s*:"}
_SCRIPT = {lang: re.compile(r"\n" + label) for lang, label in _LABEL.items()}
# An answer opening with a label, no quotation after it: what follows may be the question said back
# (我问：你想要念扬州的家吗？); 我：… and 我问：… are a script's lines.
_LABEL_FIRST = {lang: re.compile(label + r"(?!\s*[“\"「『])") for lang, label in _LABEL.items()}
# A label that is only who speaks, or who and a verb of speaking (我问：你平时是怎么教我的读书的？, heldout9)
_SPEAKER = re.compile(r"[我你他她](?:问|说|答|道)?|I|You|Me|Visitor")
_SELF_BEFORE = {"zh": re.compile(r"我(?:是|叫|乃|便是|就是)?$|叫我$|称我$"),
                "en": re.compile(r"(?:I am|I'm|my name is|call(?:s|ed)? me|me,?)\s+$", re.I)}


def third_person(text: str, names: Iterable[str], lang: str) -> int:
    """Where the answer first names her as someone else ("看着黛玉咳嗽", "Elizabeth thought"), -1 if it never
    does; "我是林黛玉" / "I am Elizabeth" / "they call me Lizzy" are her own name said by her."""
    found, seen = [], []
    for name in sorted(names, key=len, reverse=True):  # 林黛玉 before the 黛玉 inside it
        for m in re.finditer(re.escape(name), text):
            if any(a <= m.start() < b for a, b in seen):
                continue
            seen.append(m.span())
            if not _SELF_BEFORE[lang].search(text[max(0, m.start() - 12):m.start()]):
                found.append(m.start())
    return min(found, default=-1)


# She says she is someone: 我叫… / 我是… / "I am …" / "my name is …" / "call me …".
_CLAIM = {"zh": r"我(?:叫做|叫|是|乃|便是|就是)", "en": r"\b(?i:I am|I'm|my name is|call me)\s+"}
_CLAIM_RE = {lang: re.compile(claim) for lang, claim in _CLAIM.items()}
# The name ends there: a 的, 's or a noun after it is someone else's thing (我是宝玉的表妹, "I am Jane's sister");
# the text's end counts only once the answer is whole (the stream may bring 的 next).
_NAME_END = r"(?=[，。！？；、…”」』,.!?;:\s]{end})"


@lru_cache(maxsize=16)
def _claims(others: tuple[str, ...], lang: str, final: bool) -> re.Pattern[str]:
    alt = "|".join(re.escape(o) for o in sorted(others, key=len, reverse=True))
    return re.compile(f"{_CLAIM[lang]}(?:{alt}){_NAME_END.format(end='|$' if final else '')}")


def claims_another(text: str, others: Iterable[str], lang: str, final: bool = True) -> int:
    """Where she says she is another of her book's people (我叫雪雁, "I am Jane."), -1 if she never does: the
    1.5B answered 你的丫头雪雁是从哪里跟来的？ with 「我叫雪雁，是从扬州来的丫头。」 (heldout19)."""
    others = tuple(o for o in others if o)
    if not others:
        return -1
    m = _claims(others, lang, final).search(text)
    return m.start() if m else -1


def _words(text: str) -> list[tuple[int, str]]:
    """English words of ``text``, lowercased, each with its offset."""
    return [(m.start(), m.group(0).lower()) for m in re.finditer(r"[A-Za-z']+", text)]


def copied_from(text: str, source: str, lang: str) -> int:
    """Where ``text`` starts copying a long stretch of ``source`` word for word (16 Chinese characters,
    10 English words), -1 if it does not: a small model recites its prompt (你是林如海与贾敏的独女，母亲早逝后…)
    or an answer it gave before."""
    n = 16 if lang == "zh" else 10
    grams = _grams(source, lang, n)
    if lang == "zh":
        return next((i for i in range(len(text) - n + 1) if text[i:i + n] in grams), -1)
    words = _words(text)
    return next((words[i][0] for i in range(len(words) - n + 1)
                 if tuple(w for _, w in words[i:i + n]) in grams), -1)


_YOU = {"zh": re.compile("你"), "en": re.compile(r"\byou(?:rs?|rself)?\b", re.I)}


def told_as_you(text: str, world: str, lang: str) -> int:
    """Where the "you" is (你 / you / your) of a stretch of this turn's world info that ``text`` copies (6
    Chinese characters or 4 English words holding it), -1 if none: copied, her facts read as
    if she told the reader about the reader (「…你和宝玉、宝钗都是进了贾府才相识的」, "…your cousin")."""
    n = 6 if lang == "zh" else 4
    grams = _grams(world, lang, n)
    if lang == "zh":
        return next((m.start() for m in _YOU["zh"].finditer(text)
                     if any(text[i:i + n] in grams for i in range(max(0, m.start() - n + 1), m.start() + 1))), -1)
    words = _words(text)
    return next((at for j, (at, w) in enumerate(words) if _YOU["en"].fullmatch(w)
                 and any(tuple(x for _, x in words[i:i + n]) in grams for i in range(max(0, j - n + 1), j + 1))), -1)


def said_before(text: str, earlier: Iterable[str], lang: str, n: int = 8, final: bool = False) -> str:
    """Whether ``text``, an answer so far, starts as one of her ``earlier`` answers: "repeat" when its first
    ``n`` units (all of them, for a whole answer of 4 or more) are an earlier answer's first, "hold" while
    it may still become one, "" once it cannot."""
    mine = tuple(units(text, lang))
    if lang != "zh" and not final and re.search(r"[A-Za-z']$", text):
        mine = mine[:-1]  # the last word may still be arriving ("c" of "could")
    if not mine:
        return "hold"
    hold = False
    k = min(len(mine), n)
    for answer in earlier:
        theirs = _units_once(answer, lang)
        if len(theirs) < k or mine[:k] != theirs[:k]:
            continue
        if k == n or (final and mine == theirs and k >= 4):
            return "repeat"
        hold = hold or not final
    return "hold" if hold else ""


@lru_cache(maxsize=64)
def _units_once(answer: str, lang: str) -> tuple[str, ...]:
    """units() of an earlier answer, split once per conversation rather than on every streamed piece."""
    return tuple(units(answer, lang))


@lru_cache(maxsize=16)
def _grams(source: str, lang: str, n: int) -> frozenset:
    """Every stretch of ``n`` characters (Chinese) or words (English) of a prompt head, once per head."""
    if lang == "zh":
        return frozenset(source[i:i + n] for i in range(len(source) - n + 1))
    src = re.findall(r"[A-Za-z']+", source.lower())
    return frozenset(tuple(src[i:i + n]) for i in range(len(src) - n + 1))


@dataclass(frozen=True)
class Rules:
    """One character's limits in one conversation turn."""

    lang: str
    question: str = ""
    modern: tuple[str, ...] = ()  # her era's unknown words (empty: the era is not guarded)
    assistant: tuple[str, ...] = ()  # an assistant's phrases ("How can I help")
    code: bool = True
    echo: bool = True  # hold the opening until it cannot be the question said back
    names: tuple[str, ...] = ()  # hers: said as someone else's, they break the first person
    # Her book's other people (and places), asked for only when an answer says 我是/我叫/"I am": she is none of
    # them. None: not checked.
    others: Callable[[], Sequence[str]] | None = None
    head: str = ""  # the prompt's static head: an answer must not recite it
    latin: bool = False  # a Chinese character of another era writes no Latin word (the model's "语言 modelo")
    figures: bool = True  # False: her book writes no numbers in figures (10小时, 17 × 23 = 391), nor does she
    cjk: bool = False  # an English character of another era writes no Chinese (Starbucks as "from星巴克")
    # A whole sentence -> True when it sounds like an assistant's (persona/tone.py); None: words only.
    tone: Callable[[str], bool] | None = None
    # Text -> the words in it her book never writes (persona/strange.py), on a question from outside her
    # world: the model reaches for 高速列车 when 高铁 is barred. None: not checked.
    unknown: Callable[[str], list[str]] | None = None
    # Her earlier answers in this conversation: a new one must not say one of them again word for word (the
    # 1.5B answered three different follow-ups with its first answer, past DRY's 64-token window).
    earlier: tuple[str, ...] = ()
    # This turn's world info (her lorebook's facts, written to her as "you"): its "you" must not be copied.
    world: str = ""


def _ends(text: str) -> list[int]:
    """Where the whole sentences of ``text`` end ("Mr. Darcy" does not end one)."""
    return [m.end() for m in SENT_END.finditer(text) if not text[:m.end()].rstrip().endswith(ABBREV)]


def trail_off(text: str, lang: str) -> str:
    """What to add to an answer that stops mid-sentence, so it trails off instead of breaking ('' if whole)."""
    if not text.strip() or re.search(r"[。！？!?.…”\"』」）)]\s*$", text):
        return ""
    return "……" if lang == "zh" else "…"


@dataclass
class Gate:
    """Releases a streaming answer as soon as it is safe: the opening is held until it can no longer be
    an echo of the question, and after that only the last few characters are (a modern word or an
    assistant phrase may still be arriving). Text that trips ``rules`` is never shown; the gate stops.

    ``before``: what is already shown (the answer's given start, or the answer being continued); a given
    start belongs to the opening. ``continuing``: this gate continues an answer (it has no opening)."""

    rules: Rules
    before: str = ""
    continuing: bool = False
    shown: str = ""
    pending: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        words = [*self.rules.modern, *self.rules.assistant, *self.rules.names, "```"]
        self.hold = max(len(w) for w in words) + 1  # what may still be the start of a guarded word
        if self.rules.echo:  # in character: or a speaker tag (紫鹃道：“ / ," said Jane)
            self.hold = max(self.hold, 10 if self.rules.lang == "zh" else 24)
        if self.rules.head:  # or the start of a recital: 16 characters, 10 words
            self.hold = max(self.hold, 17 if self.rules.lang == "zh" else 70)
        self.opened = self.continuing or not self.rules.echo  # the opening can no longer be an echo
        self._toned: dict[str, bool] = {}  # sentences already judged by rules.tone
        # Until the answer's start differs from the start of each earlier answer, it is held: a reader-mode
        # answer would otherwise show most of a repeat before 10 of its words match.
        self.distinct = self.continuing or not self.rules.earlier

    def feed(self, piece: str) -> str:
        """Add model text; returns what is now safe to show ('' when nothing is). When the new text trips
        a rule, what came before the fault is still shown up to its last whole sentence, and the gate stops."""
        if self.reason:
            return ""
        self.pending += piece
        why, at = self._check(final=False)
        if why:
            return self._stop(why, at)
        if not self.distinct:
            start = said_before(self.before + self.shown + self.pending, self.rules.earlier, self.rules.lang)
            if start == "repeat":
                return self._stop("repeat", 0)
            if start == "hold":
                return ""
            self.distinct = True
        if not self.opened:
            return ""
        if self.rules.echo:
            # In character: whole sentences only, so a later fault never leaves half of one. A whole
            # sentence holds every word it will ever hold (no guarded word spans a sentence end), so it
            # goes out once the next character confirms its end ("3." of "3.5", "。" before "”").
            ends = [e for e in _ends(self.pending) if e < len(self.pending)]
            if self.rules.head:  # a sentence found word for word in her prompt may begin a recital: wait
                ends = [e for e in ends if self._own(self.pending[:e])]
            at = self._tone_at(ends[-1]) if ends else -1
            if at >= 0:
                return self._stop("assistant: tone", at)
            return self._show(ends[-1] if ends else 0)
        return self._show(max(0, len(self.pending) - self.hold))

    def _tone_at(self, upto: int) -> int:
        """Where in ``pending[:upto]`` the first sentence that sounds like an assistant starts (-1: none).
        Each sentence is judged once, when it is whole (an embedding each: too dear per token)."""
        if self.rules.tone is None or upto <= 0:
            return -1
        starts = [0, *[e for e in _ends(self.pending[:upto]) if e < upto]]
        for a, b in zip(starts, [*starts[1:], upto], strict=True):
            sentence = self.pending[a:b]
            if a == 0 and not self.shown and not self.continuing:
                # The answer's given start (我 / I) begins it; an answer being continued ends on a whole
                # sentence, and joined to it a new assistant's sentence went unjudged ("…request. Let's try…").
                sentence = self.before + sentence
            key = sentence.strip()
            if key and key not in self._toned:
                self._toned[key] = self.rules.tone(key)
            if key and self._toned[key]:
                return a
        return -1

    def _own(self, text: str) -> bool:
        """``text``'s last sentence is not a piece of her prompt's head ("妃子。" of 号潇湘妃子。)."""
        starts = [0, *_ends(text[:-1])]
        last = text[starts[-1]:].strip()
        return len(last) < 2 or last not in self.rules.head

    def _show(self, upto: int) -> str:
        out, self.pending = self.pending[:upto], self.pending[upto:]
        self.shown += out
        return out

    def _stop(self, why: str, at: int) -> str:
        """Trip: show the clean whole sentences before the fault (an answer continued from there reads on)."""
        ends = _ends(self.pending[:max(at, 0)]) if self.opened else []
        out = self._show(ends[-1]) if ends else ""
        self.reason, self.pending = why, ""
        return out

    def _check(self, final: bool) -> tuple[str, int]:
        """(why the pending text must not be shown, where in it the fault begins), or ('', -1)."""
        r = self.rules
        if not self.opened:
            opening = self.before + self.pending
            label = _LABEL_FIRST[r.lang].match(opening) if r.echo else None
            opening = opening[label.end():] if label else opening  # what a label opens is what may echo
            m = SENT_END.search(opening)
            done = m is not None and (m.end() < len(opening) or final)
            if done or final:
                first = opening[: m.end()] if m else opening
                if label and _SPEAKER.fullmatch(label["who"]):
                    return "script", 0  # 我：好啊！… : she writes herself a part
                if echoes(first, r.question, r.lang, whole=final and first.strip() == opening.strip()):
                    return "echo", 0
                self.opened = True
            elif len(units(opening, r.lang)) > max(len(units(r.question, r.lang)), 4) * 1.3:
                self.opened = True  # longer than the question: not an echo, whatever follows
        told = self.before + self.shown
        garbled = GARBLED.search(self.pending)
        if garbled:
            return "garbled", garbled.start()
        loop = loop_at(told + self.pending, r.lang)
        if loop >= 0:
            return "loop", loop - len(told)
        seen = told[-self.hold:]
        fresh = seen + self.pending  # the words already shown were checked when they came
        old = modern_words(fresh, r.modern)
        if old:
            return "modern: " + ", ".join(old), first_word_at(fresh, old) - len(seen)
        latin = re.search(r"[A-Za-z]", fresh) if r.latin else None  # x² - 5x + 6 = 0 too
        if latin:
            return "modern: Latin script", latin.start() - len(seen)
        cjk = re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", fresh) if r.cjk else None
        if cjk:
            return "modern: foreign script", cjk.start() - len(seen)
        figure = None if r.figures else re.search(r"\d", fresh)
        if figure:
            return "modern: figures", figure.start() - len(seen)
        # The last few characters may be half a word (列 of 列车), unless a sentence ends there: a whole
        # sentence is about to be shown.
        upto = len(fresh) if final else max([len(fresh) - 3, *_ends(fresh)])
        strange = r.unknown(fresh[:upto]) if r.unknown else []
        if strange:
            return "strange: " + ", ".join(strange), fresh.find(strange[0]) - len(seen)
        # Copies are looked for in the text shown last and what is pending (a copy may straddle them).
        back = told[-60:]
        tail = back + self.pending
        for why, at in (("recited the prompt", copied_from(tail, r.head, r.lang) if r.head else -1),
                        ('recited her facts as "you"', told_as_you(tail, r.world, r.lang) if r.world else -1),
                        ("repeat", copied_from(tail, "\n".join(r.earlier), r.lang) if r.earlier else -1)):
            if at >= 0:
                return why, max(0, at - len(back))
        asked = asked_again(fresh, r.question, r.lang) if r.echo else -1
        if asked >= 0:
            return "echo", asked - len(seen)  # …\n\n你觉得凤姐这个人厉害不厉害？: the question said back at the end
        told_by = _NARRATION[r.lang].search(fresh) if r.echo else None  # in character only
        if told_by:
            return "narration", told_by.start() - len(seen)
        script = _SCRIPT[r.lang].search(fresh) if r.echo else None
        if script:
            return "script", script.start() - len(seen)
        named = third_person(fresh, r.names, r.lang)
        if named >= 0:
            return "third person", named - len(seen)
        other = claims_another(fresh, r.others(), r.lang, final) if r.others and _CLAIM_RE[r.lang].search(fresh) else -1
        if other >= 0:
            return "someone else", other - len(seen)
        code = _CODE.search(fresh) if r.code else None
        if code:
            return "code", code.start() - len(seen)
        low = fresh.lower()
        for phrase in r.assistant:
            if phrase.lower() in low:
                return "assistant", low.index(phrase.lower()) - len(seen)
        return "", -1

    def close(self, cut_off: bool = False) -> str:
        """At the end of the stream: the rest, if it passes. When the token cap cut the answer off, it ends
        on its last whole sentence (in character, the last one shown), else trails off with an ellipsis."""
        if self.reason:
            return ""
        why, at = self._check(final=True)
        if why:
            return self._stop(why, at)
        at = self._tone_at(len(self.pending)) if self.rules.echo else -1
        if at >= 0:
            return self._stop("assistant: tone", at)
        if not self.distinct and said_before(self.before + self.shown + self.pending, self.rules.earlier,
                                             self.rules.lang, final=True) == "repeat":
            return self._stop("repeat", 0)
        tail = self.pending
        if cut_off:
            ends = _ends(tail)
            if ends:
                tail = tail[: ends[-1]]
            elif self.rules.echo and self.shown.strip():
                tail = ""  # in character what was shown ends on a whole sentence: the fragment is dropped
            else:
                tail = tail.rstrip("，,、；;：: ")
                tail += trail_off(self.before + self.shown + tail, self.rules.lang)
        self.pending = tail
        out = self._show(len(tail))
        self.pending = ""
        return out

    @property
    def nothing_shown(self) -> bool:
        return not self.shown.strip()

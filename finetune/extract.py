"""Find the lines a character speaks in a novel, with the speaker attributed by rule.

A paragraph is cut into narration and quotations; a quotation is given to the
character only when a speech tag names her as the subject (黛玉冷笑道：“…”,
"…," said Elizabeth / Elizabeth replied, "…"), or, in English, when a "she" tag
can only mean her. Untagged lines are left out: precision matters more than recall
for training a persona, since a wrong line teaches the adapter someone else's voice.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from registry import Registry

# ---------------------------------------------------------------- reading


def read_text(path: str | Path) -> tuple[str, str]:
    """Read a book in any encoding with the knowledge base's reader (one reader for the whole app)."""
    from knowledge_base.reading import read_text as kb_read_text

    return kb_read_text(path)


# ---------------------------------------------------------------- segmentation

_PAIRS = {"“": "”", "「": "」", "『": "』", '"': '"'}


@dataclass
class Segment:
    """A stretch of a paragraph: narration or one quotation (without its quote marks)."""

    quote: bool
    text: str
    start: int  # offset in the whole text
    end: int


@dataclass
class Paragraph:
    start: int
    segments: list[Segment]

    @property
    def quotes(self) -> list[int]:
        return [i for i, s in enumerate(self.segments) if s.quote]


def split_paragraphs(text: str) -> list[tuple[int, str]]:
    """Paragraphs with their offsets: blank-line separated, or one per line when the book has no blank lines."""
    blocks = [(m.start(), m.group(0)) for m in re.finditer(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", text, re.S)]
    lengths = sorted(len(b) for _, b in blocks) or [0]
    if lengths[len(lengths) // 2] > 3000 or len(blocks) < 3:  # one paragraph per line
        blocks = [(m.start(), m.group(0)) for m in re.finditer(r"[^\n]*\S[^\n]*", text)]
    return blocks


def segment(par_start: int, par: str) -> Paragraph:
    """Cut a paragraph into narration and quotations; an unclosed quotation runs to the paragraph's end."""
    segs: list[Segment] = []
    pos, i, n = 0, 0, len(par)
    while i < n:
        ch = par[i]
        if ch in _PAIRS:
            closer = _PAIRS[ch]
            j = par.find(closer, i + 1)
            # A second opener before the closer means the book lost a closing mark.
            nxt = par.find(ch, i + 1) if ch != closer else -1
            if j < 0 or (0 <= nxt < j):
                j = nxt if nxt >= 0 else n
                end_mark = j
            else:
                end_mark = j + 1
            if i > pos:
                segs.append(Segment(False, par[pos:i], par_start + pos, par_start + i))
            segs.append(Segment(True, par[i + 1:j], par_start + i + 1, par_start + j))
            pos = i = end_mark
            continue
        i += 1
    if pos < n:
        segs.append(Segment(False, par[pos:], par_start + pos, par_start + n))
    return Paragraph(par_start, segs)


# ---------------------------------------------------------------- attribution


@dataclass
class Attribution:
    """Who says a quotation, how we know, and whether it continues the quotation before it."""

    alias: str
    method: str


class Attributor(Protocol):
    """Gives each quotation of a paragraph to the target character, or to nobody."""

    def attribute(self, pars: list[Paragraph], k: int) -> dict[int, Attribution]: ...


ATTRIBUTORS: Registry[Callable[..., Attributor]] = Registry("speaker attributor")


def _alias_re(aliases: Iterable[str]) -> str:
    names = sorted({a for a in aliases if a}, key=len, reverse=True)
    return "|".join(re.escape(a) for a in names)


# Chinese -------------------------------------------------------------------

# Words that may stand before the subject without being one (便/因/只见/却说 ...).
_ZH_PREFIX = (
    "于是 一面 此时 这里 那里 这边 那边 当下 谁知 不想 次日 后来 原来 如今 且说 却说 话说 只见 但见 忽见 却见 "
    "又见 正是 那时 彼时 此刻 一时 少时 说着 说罢 说毕 说完 言毕 言罢 听了 听说 便 因 忙 又 只 却 遂 乃 也 就 才 方 那 这 偏 正 随 且 "
    "独 连 倒 还 都 早 先 再 遂 即 亦 竟 今 至 当 时 然 而 则 故 但 忽 恰 此 彼"
).split()
_ZH_PREFIX_RE = "(?:" + "|".join(sorted(_ZH_PREFIX, key=len, reverse=True)) + r"|\s)*"
# A quotation is speech when the narration right before it ends with a speech verb.
_ZH_VERB_END = re.compile(
    r"(?<!知)(?<!难)(?<!味)(?<!街)(?<!一)(?<!厚)(?<!公)(?<!门)(?<!这么)(?<!那么)"
    r"(?:道|说|曰|云|问|答|叫|喊|嚷|骂|啐|吩咐|告诉|回|言|讲|叹|喝|嚷着|笑着说|哭着说)[\s：:，,]*$"
)
_ZH_SENT_END = re.compile(r"[。！？；…!?;]")
# After a quotation: 黛玉说着，/ 黛玉笑道。 (a tag that ends the sentence, not a colon).
_ZH_POST_VERB = r"(?<!听)(?<!听了)(?:说着|说毕|说罢|说完|笑道|叹道|冷笑道|道)"
_ZH_STOP_IN_NAME = set("说道笑问叹哭便因又也忙只却听见了着的是在不这那一个人去来向对和与同众都曰")
# A speech clause with no subject of its own: 又道 / 冷笑道 / 便说道 / 因问 / 忙笑着说道.
_ZH_BARE = "笑冷叹哭忙又便因也都只遂乃复再才方就先一面着了说道问曰云答回应叫喊嚷骂啐喝大高低悄向亦即还"
_ZH_VERB_TAIL = re.compile(rf"[{_ZH_BARE}]*$")


def mine_zh_names(text: str) -> set[str]:
    """Speakers of a Chinese novel (宝玉道：, 玄德曰：), so a clause that opens with one has its own subject."""
    counts: Counter[str] = Counter()
    for m in re.finditer(r"(?:^|[。！？，：”\s])([\u4e00-\u9fff]{2,4}?)(?:笑|冷笑|叹|哭|忙|便|又|因|也|都|听了|大)?"
                         r"(?:叫|喝|喊|嚷|问|答|回|说|笑)?(?:道|曰|云)[：:]", text, re.M):
        name = m.group(1)
        if not (set(name) & _ZH_STOP_IN_NAME):
            counts[name] += 1
    # In a whole novel a name said once is as likely a phrase; in a short passage it is all we have.
    min_count = 1 if len(text) < 20000 else 3
    return {n for n, c in counts.items() if c >= min_count}


@ATTRIBUTORS.register("zh")
class ChineseAttributor:
    """Speech tags of Chinese novels: 黛玉道：“…”, 林黛玉冷笑道：“…”, 孔明曰：“…”, 黛玉听了，便说道：“…”."""

    def __init__(self, aliases: list[str], text: str = "", other_names: Iterable[str] = ()) -> None:
        self.aliases = sorted(set(aliases), key=len, reverse=True)
        own = set(self.aliases)
        mined = mine_zh_names(text) if text else set()
        # A mined "name" that holds one of ours (林黛玉 vs 黛玉) is ours, not someone else's.
        self.others = sorted({n for n in (mined | set(other_names))
                              if not any(a in n or n in a for a in own)}, key=len, reverse=True)
        alias = _alias_re(self.aliases)
        self._prefix = re.compile(f"^{_ZH_PREFIX_RE}")
        self._own_start = re.compile(rf"^(?:{alias})")
        self._other_start = re.compile(rf"^(?:{_alias_re(self.others)})") if self.others else None
        self._any_name = re.compile(_alias_re(self.aliases + self.others))
        self._post = re.compile(
            rf"^{_ZH_PREFIX_RE}(?P<a>{alias})[^，。：！？“”\s]{{0,6}}?{_ZH_POST_VERB}(?=[。，！；])")

    def _opens_with(self, clause: str) -> str | None:
        """'own' / 'other' when the clause (past 便/因/只见 ...) opens with a speaker's name."""
        body = self._prefix.sub("", clause)
        m = self._own_start.match(body)
        if m:
            rest = body[m.end():]
            # 黛玉宝钗都笑道 / 黛玉、探春一齐说道: two speakers at once is not her own line.
            if self._any_name.match(rest) or re.match(r"^[、和与同及]", rest):
                return "other"
            return "own"
        if self._other_start and self._other_start.match(body):
            return "other"
        return None

    def _lead_speaker(self, lead: str, after_quote: bool) -> str | None:
        """'own' when the narration before a quotation makes her its speaker; 'other', 'inherit' or None."""
        lead = lead.rstrip()
        if not _ZH_VERB_END.search(lead):
            return None
        sentence = _ZH_SENT_END.split(lead)[-1]
        reached_start = sentence == lead  # no sentence end inside: the lead starts at the previous quote
        clauses = [c.strip() for c in re.split(r"[，,：:]", re.sub(r"[\s：:，,]+$", "", sentence))]
        clauses = [c for c in clauses if c]
        if not clauses:
            return None
        verb_clause = clauses[-1]
        found = self._opens_with(verb_clause)
        if found:
            return found
        subject = _ZH_VERB_TAIL.sub("", self._prefix.sub("", verb_clause))
        if subject and len(subject) <= 3:
            return "other"  # 玄德曰 / 那人道 / 他笑道: a short subject that is not hers
        certain = not subject  # 以手扣架道 might hide a subject; only a bare 又道 passes the turn on
        for c in reversed(clauses[-5:-1]):
            found = self._opens_with(c)
            if found:
                return found
            certain = certain and not _ZH_VERB_TAIL.sub("", self._prefix.sub("", c))
        if after_quote and reached_start and certain and len(sentence) <= 14:
            return "inherit"  # “…”说着，又道：“…”: the speaker of the quotation before goes on
        return None

    def attribute(self, pars: list[Paragraph], k: int) -> dict[int, Attribution]:
        par = pars[k]
        out: dict[int, Attribution] = {}
        speaker: dict[int, str] = {}
        segs = par.segments
        for qi in par.quotes:
            prev = segs[qi - 1] if qi > 0 else None
            after_quote = qi >= 2 and segs[qi - 2].quote and prev is not None and not prev.quote
            verdict = self._lead_speaker(prev.text, after_quote) if prev is not None and not prev.quote else None
            if verdict == "inherit":
                verdict = speaker.get(qi - 2)
                method = "zh-continues"
            else:
                method = "zh-lead"
            if verdict is None and qi + 1 < len(segs) and not segs[qi + 1].quote:
                if self._post.match(segs[qi + 1].text.strip()):
                    verdict, method = "own", "zh-after"
            if verdict:
                speaker[qi] = verdict
            if verdict == "own":
                m = re.search(_alias_re(self.aliases), (prev.text if prev else "") + (
                    segs[qi + 1].text if qi + 1 < len(segs) else ""))
                out[qi] = Attribution(m.group(0) if m else self.aliases[0], method)
        return out


# English -------------------------------------------------------------------

EN_VERBS = (
    "said says say replied replies cried returned answered observed added continued exclaimed asked "
    "inquired enquired remarked rejoined whispered muttered murmured shouted called began resumed repeated "
    "interrupted declared protested urged persisted demanded retorted sighed laughed faltered stammered "
    "cried out went on ejaculated explained agreed admitted insisted pursued recollected concluded "
    "thought said, answered, returned,"
).replace(",", "").split()
_EN_VERB = r"(?:went\s+on|" + "|".join(sorted(set(EN_VERBS), key=len, reverse=True)) + r")"
_EN_WHO_OTHER = (r"(?:(?:Mr|Mrs|Miss|Lady|Sir|Colonel|Captain|Dr|Lord)\.?\s+[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)?"
                 r"|[A-Z][a-z][\w'-]*(?:\s+[A-Z][\w'-]+)?|(?:his|her|their|the|my)\s+\w+|she|he|they|I|we)")
_EN_OPENERS = set(
    "The She He Her His It Its But And When As After At In On Then There This That These Those What How Oh Yes No "
    "They Their We You With While Though Although If Not Nor For So Such To A An All Some Every Each One Upon Before "
    "Having Being Still Now Here Why Where Who Whom Whose Well Indeed Perhaps Though Soon Thus Hence Nothing My "
    "Our Your Mine Am Is Was Were Do Did Does Be Let Pray Dear Good Sir Madam Ma".split())
_EN_SENT_END = re.compile(r"[.!?;](?=\s|$)")
# Someone else the pronoun could mean: her mother, his friend, Mrs. Long ...
_EN_OTHER_PERSON = re.compile(r"\b(?:her|his|the)\s+(?:mother|father|sister|sisters|brother|aunt|uncle|friend|cousin|"
                              r"daughter|son|ladyship|lordship|companion|wife|husband)\b|"
                              r"\b(?:Mr|Mrs|Miss|Lady|Sir|Colonel|Captain|Dr|Lord)\.?\s+[A-Z]")


@ATTRIBUTORS.register("en")
class EnglishAttributor:
    """Speech tags of English novels: "…," said Elizabeth / Elizabeth replied, "…" / "…" cried she."""

    def __init__(self, aliases: list[str], text: str = "", other_names: Iterable[str] = ()) -> None:
        self.aliases = sorted(set(aliases), key=len, reverse=True)
        alias = _alias_re(self.aliases)
        self._alias = re.compile(rf"\b(?:{alias})\b")
        self.pronoun = self._infer_pronoun(text)
        who = rf"(?P<who>{alias}|{_EN_WHO_OTHER})"
        adv = r"(?:\w+ly\s+)?"
        # "…," said Elizabeth / "…" Elizabeth replied / "…," said she, laughing
        self._tail = [re.compile(rf"^[\s,]*{adv}{_EN_VERB}\s+{adv}(?:{who})\b(?!\s+(?:{alias}))"),
                      re.compile(rf"^[\s,]*{who}\s+{adv}{_EN_VERB}\b")]
        # Elizabeth replied, "…" / Elizabeth, after a pause, answered: "…"
        self._lead = re.compile(
            rf"^\s*(?:(?:And|But|Then|So|Here|At\s+length|At\s+last)\s*,?\s+)?{who}\s+{adv}{_EN_VERB}\b[^.!?\"]{{0,70}}[,:]\s*$")

    def _infer_pronoun(self, text: str) -> str:
        """'she' or 'he': the pronoun that most often follows the character's name in the book."""
        she = he = 0
        for m in self._alias.finditer(text[:400000]):
            window = text[m.end():m.end() + 60]
            she += len(re.findall(r"\b(?:she|her|herself)\b", window))
            he += len(re.findall(r"\b(?:he|his|him|himself)\b", window))
        return "he" if he > she else "she"

    def _who(self, who: str, par: Paragraph, upto: int) -> str:
        """'own' / 'other' for a tag's subject; a pronoun only when the narration before names her and nobody else."""
        if self._alias.fullmatch(who):
            return "own"
        if who.lower() != self.pronoun:
            return "other"
        narration = " ".join(s.text for s in par.segments if not s.quote and s.start < upto)
        # She must be the subject of a sentence there (Elizabeth stared.), not its object (alone with Elizabeth).
        if not re.search(rf"(?:^|[.!?]\s+)(?:{_alias_re(self.aliases)})\b", narration.strip()):
            return "other"
        without_own = self._alias.sub(" ", narration)
        if _EN_OTHER_PERSON.search(without_own):
            return "other"
        # Any other capitalised word that is not a common sentence opener may be another person.
        for m in re.finditer(r"\b[A-Z][a-z]+\b", without_own):
            if m.group(0) not in _EN_OPENERS:
                return "other"
        return "own"

    def _tag(self, text: str) -> re.Match[str] | None:
        first = _EN_SENT_END.split(text, 1)[0]
        for rx in self._tail:
            m = rx.match(first)
            if m:
                return m
        return None

    def attribute(self, pars: list[Paragraph], k: int) -> dict[int, Attribution]:
        par = pars[k]
        segs = par.segments
        verdicts: dict[int, tuple[str, str, str]] = {}  # quote index -> (own/other, who, method)
        for qi in par.quotes:
            nxt = segs[qi + 1] if qi + 1 < len(segs) and not segs[qi + 1].quote else None
            prev = segs[qi - 1] if qi > 0 and not segs[qi - 1].quote else None
            if nxt is not None and (m := self._tag(nxt.text)):
                kind = self._who(m.group("who"), par, nxt.start + m.start("who"))
                if self._alias.match(nxt.text[m.end():].lstrip(" ,")[3:]) and nxt.text[m.end():].lstrip(" ,")[:3] == "to ":
                    kind = "other"  # "said Miss Bennet to Elizabeth": nobody speaks to herself, so the name is someone else's
                verdicts[qi] = (kind, m.group("who"), "en-after")
            elif prev is not None and (m := self._lead.match(_EN_SENT_END.split(prev.text)[-1])):
                verdicts[qi] = (self._who(m.group("who"), par, prev.end), m.group("who"), "en-before")
        kinds = {v[0] for v in verdicts.values()}
        out: dict[int, Attribution] = {}
        if kinds == {"own"}:
            # One speaker per paragraph is the English convention: every quotation is hers.
            who = next(iter(verdicts.values()))[1]
            for qi in par.quotes:
                v = verdicts.get(qi)
                out[qi] = Attribution(v[1] if v else who, v[2] if v else "en-paragraph")
        else:
            for qi, (kind, who, method) in verdicts.items():
                if kind == "own":
                    out[qi] = Attribution(who, method)
        return out


def detect_language(text: str) -> str:
    """'zh' when CJK characters dominate the letters, else 'en'."""
    sample = text[:200000]
    cjk = len(re.findall(r"[\u4e00-\u9fff]", sample))
    latin = len(re.findall(r"[A-Za-z]", sample))
    return "zh" if cjk > latin / 4 else "en"


# ---------------------------------------------------------------- samples


@dataclass
class Line:
    """One utterance of the character with what was said or narrated just before it."""

    output: str
    input: str
    alias: str
    method: str
    source: str
    offset: int  # where the utterance starts in the source text
    input_kind: str = "line"  # line (someone's speech) | narration
    context: str = field(default="", repr=False)  # the surrounding text, for checking by hand


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _narration_window(text: str, start: int, end: int, limit: int) -> str:
    """The last ``limit`` characters of narration before a line, cut at a sentence start when possible."""
    chunk = _clean(text[max(start, end - limit * 2):end])
    chunk = re.sub(r"[“”\"「」]", "", chunk)
    if len(chunk) > limit:
        chunk = chunk[-limit:]
        m = re.search(r"[。！？.!?]\s*", chunk)
        if m and m.end() < len(chunk) - 10:
            chunk = chunk[m.end():]
    return chunk.strip(" ，,：:")


def extract_lines(text: str, aliases: list[str], source: str = "", language: str | None = None,
                  max_input: int = 200) -> list[Line]:
    """Every line the character speaks in ``text``, paired with what came just before, in book order."""
    if not aliases:
        raise ValueError("no names to look for; give the character's name with --alias NAME")
    language = language or detect_language(text)
    attributor = ATTRIBUTORS.create(language, aliases=list(aliases), text=text)
    pars = [segment(s, p) for s, p in split_paragraphs(text)]
    # All quotations of the book, in order, with the target's marked.
    quotes: list[tuple[int, int, Segment, Attribution | None]] = []
    for k, par in enumerate(pars):
        own = attributor.attribute(pars, k)
        for qi in par.quotes:
            quotes.append((k, qi, par.segments[qi], own.get(qi)))
    lines: list[Line] = []
    last_own_end = 0
    i = 0
    while i < len(quotes):
        k, qi, seg, attr = quotes[i]
        if attr is None:
            i += 1
            continue
        # Join her quotations that follow on with only a short tag between ("…," said she, "…").
        parts, end, j = [seg.text], seg.end, i + 1
        # English gives a paragraph to one speaker, so her pieces of it are one utterance however long the tag.
        gap = 10**9 if language == "en" else 40
        while j < len(quotes) and quotes[j][3] is not None and quotes[j][0] == k \
                and quotes[j][2].start - end <= gap:
            parts.append(quotes[j][2].text)
            end = quotes[j][2].end
            j += 1
        utterance = _clean(("" if language == "zh" else " ").join(p.strip() for p in parts))
        if language == "en":
            utterance = re.sub(r",$", ".", utterance)  # "…," said she: the comma belongs to the tag
        window_start = max(last_own_end, seg.start - 1500)
        before = [q for q in quotes[:i] if q[2].end <= seg.start and q[2].start >= window_start and q[3] is None]
        if before and seg.start - before[-1][2].end < 600:
            last = before[-1]
            # English gives a paragraph to one speaker: her whole speech is the prompt, not its last piece.
            group = [q for q in before if q[0] == last[0]] if language == "en" else [last]
            prompt, kind = _clean(" ".join(q[2].text.strip() for q in group)), "line"
        else:
            prompt, kind = _narration_window(text, window_start, seg.start - 1, max_input), "narration"
        ctx = text[max(0, seg.start - 300):min(len(text), end + 150)]
        if utterance and prompt and re.search(r"\w", utterance):
            lines.append(Line(utterance, prompt[-max_input * 3:], attr.alias, attr.method, source,
                              seg.start, kind, ctx))
        last_own_end = end
        i = j
    return lines


def dedupe(lines: Iterable[Line]) -> list[Line]:
    """Drop repeated utterances (same words, ignoring spacing and punctuation), keeping the first."""
    seen: set[str] = set()
    out: list[Line] = []
    for line in lines:
        key = re.sub(r"[\W_]+", "", line.output.lower())
        if key and key not in seen:
            seen.add(key)
            out.append(line)
    return out


def sample_for_review(lines: list[Line], n: int = 50, seed: int = 0) -> list[Line]:
    """A fixed random sample of lines for checking attribution by hand."""
    rng = random.Random(seed)
    return sorted(rng.sample(lines, min(n, len(lines))), key=lambda x: x.offset)


# ---------------------------------------------------------------- writing

class DatasetFormat(Protocol):
    """Turns one extracted line into one JSONL record."""

    def record(self, line: Line, system: str) -> dict: ...


FORMATS: Registry[DatasetFormat] = Registry("dataset format")


@FORMATS.register("xtuner")
class XTunerFormat:
    """XTuner's single-turn conversation record."""

    def record(self, line: Line, system: str) -> dict:
        return {"conversation": [{"system": system, "input": line.input, "output": line.output}]}


@FORMATS.register("messages")
class MessagesFormat:
    """OpenAI-style chat messages, as chat templates expect."""

    def record(self, line: Line, system: str) -> dict:
        return {"messages": [{"role": "system", "content": system},
                             {"role": "user", "content": line.input},
                             {"role": "assistant", "content": line.output}]}


def record_to_turns(record: dict) -> tuple[str, str, str]:
    """(system, input, output) from a record in either format."""
    if "conversation" in record:
        turn = record["conversation"][0]
        return turn.get("system", ""), turn["input"], turn["output"]
    by_role = {m["role"]: m["content"] for m in record["messages"]}
    return by_role.get("system", ""), by_role["user"], by_role["assistant"]

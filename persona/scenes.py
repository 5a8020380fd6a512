"""Her classic scenes: the exchanges of hers from the book that show the model how she talks.

ChatHaruhi shows a character's "classic scenes" (a line said to her and her reply, with a little
narration) inside a token budget; a small model copies a demonstrated voice far better than a
described one. Here they are found by finetune.extract's speaker rules in every book of her texts,
chosen once per character and cached (``$ZHIYIN_HOME/.cache/persona/``), and placed in the static
head of the role-play prompt, whose llama.cpp state is saved (llm/prompt_state.py): free per turn.

Choosing (``choose``): short exchanges whose reply is in her idiom (its words are more hers than the
other speakers', a smoothed log-odds over the book's quotations), spoken to someone (我/你, I/you),
not verse; then diverse, by maximal marginal relevance over USE vectors, and from different places
in the book. Per turn, ``nearest_lines`` gives the lines of hers closest in meaning to the question.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from characters import Card, texts_dir
from fileio import write_text_atomic
from settings import paths

VERSION = 2  # bump when the rules change: cached scenes are then rebuilt (2: reported speech is no tag)
MAX_SCENE_TOKENS = 100
_ZH_SPACE = re.compile(r"\s*([\u3000-\u9fff\uff00-\uffef“”‘’「」『』])\s*")


@dataclass
class Scene:
    """One exchange from the book: ``text`` the book's own words, ``line`` her reply in it."""

    text: str
    line: str
    offset: int
    source: str
    idiom: float = 0.0  # how much her reply's words are hers rather than the other speakers'


@dataclass
class BookVoice:
    """Every usable exchange of hers (candidates for the head) and every line of hers (per turn)."""

    scenes: list[Scene]
    lines: list[str]
    line_vectors: np.ndarray  # USE vectors of ``lines``, L2-normalised
    scene_vectors: np.ndarray

    def __bool__(self) -> bool:
        return bool(self.lines)


def _tokens(text: str) -> int:
    from prompting import count_tokens  # prompting imports this module's callers, not this module

    return count_tokens(text)


def _clean(text: str, lang: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return _ZH_SPACE.sub(r"\1", text) if lang == "zh" else text


def _grams(text: str, lang: str) -> list[str]:
    """Her idiom's units: character bigrams of Chinese, lowercased words of English."""
    if lang == "zh":
        chars = [c for c in text if re.match(r"\w", c)]
        return [a + b for a, b in zip(chars, chars[1:], strict=False)]
    return re.findall(r"[a-z']+", text.lower())


def is_verse(line: str) -> bool:
    """A poem's lines (五言/七言 clauses of one length), which show her verse, not her talk."""
    clauses = [c for c in re.split(r"[，。；！？、,.;!?\s]+", line) if c]
    return len(clauses) >= 2 and len({len(c) for c in clauses}) == 1 and len(clauses[0]) in (4, 5, 7)


def _span(text: str, quotes: list[tuple[int, int]], j: int, output: str, lang: str) -> int:
    """Index of the last quotation of her utterance that starts at quotes[j] (pieces joined by the extractor)."""
    want = re.sub(r"\W", "", output)
    got, k = "", j
    while k < len(quotes):
        got += re.sub(r"\W", "", text[quotes[k][0]:quotes[k][1]])
        if len(got) >= len(want):
            return k
        k += 1
    return len(quotes) - 1


def _lead_in(text: str, start: int, floor: int, limit: int) -> int:
    """Where a little narration before ``start`` begins (its last sentence, at most ``limit`` characters)."""
    lo = max(floor, start - limit)
    piece = text[lo:start]
    ends = [m.end() for m in re.finditer(r"[。！？!?.”\"」]\s*|\n\s*\n", piece) if m.end() < len(piece) - 1]
    return lo + ends[-1] if ends else lo


def _inside_quote(text: str) -> str:
    """The closing mark still owed at the end of ``text`` ('' when no quotation is open)."""
    if text.count("“") > text.count("”"):
        return "”"
    return '"' if text.count('"') % 2 else ""


def _trim(text: str, budget: int, keep_end: bool) -> str:
    """Whole sentences of ``text`` within ``budget`` tokens, from its end (what was said to her) or its start
    (her reply); a cut quotation gets its mark back, with "…" for what was left out."""
    from sentences import split_sentences

    if _tokens(text) <= budget:
        return text
    parts = split_sentences(text)
    kept: list[str] = []
    for part in reversed(parts) if keep_end else parts:
        if kept and _tokens(" ".join([*kept, part])) > budget:
            break
        kept.insert(0, part) if keep_end else kept.append(part)
    glue = "" if re.search(r"[\u4e00-\u9fff]", text) else " "
    out = glue.join(kept)
    if keep_end:
        opener = {"”": "“", '"': '"'}.get(_inside_quote(text[: len(text) - len(out)]), "")
        return opener + "…" + out
    return out + "…" + _inside_quote(out)


def book_scenes(text: str, names: list[str], lang: str, source: str = "") -> tuple[list[Scene], list[str], list[str]]:
    """(her exchanges as scenes, her lines, the other speakers' quotations) in one book."""
    from finetune.extract import dedupe, extract_lines, segment, split_paragraphs

    pars = [(s, segment(s, p)) for s, p in split_paragraphs(text)]
    quotes = sorted((seg.start, seg.end) for _, par in pars for seg in par.segments if seg.quote)
    par_starts = [s for s, _ in pars]
    starts = [q[0] for q in quotes]
    lines = dedupe(extract_lines(text, names, source=source, language=lang))
    own: set[int] = set()
    scenes: list[Scene] = []
    limit = 40 if lang == "zh" else 160
    for line in lines:
        j = bisect.bisect_left(starts, line.offset)
        if j >= len(quotes) or quotes[j][0] != line.offset:
            continue
        k = _span(text, quotes, j, line.output, lang)
        own.update(range(j, k + 1))
        if line.input_kind != "line" or j == 0:
            continue  # a scene is an exchange: something said to her, and her reply
        i = j - 1
        floor = par_starts[bisect.bisect_right(par_starts, quotes[i][0]) - 1]
        # English gives a paragraph to one speaker: what was said to her starts at its first quotation.
        while lang != "zh" and i > 0 and quotes[i - 1][0] >= floor and i - 1 not in own:
            i -= 1
        begin = _lead_in(text, quotes[i][0] - 1, max(floor, quotes[i - 1][1] + 1 if i > 0 else 0), limit)
        split, end = line.offset - 1, min(len(text), quotes[k][1] + 1)  # her opening and closing marks
        said = _trim(_clean(text[begin:split], lang), MAX_SCENE_TOKENS * 2 // 5, keep_end=True)
        reply = _trim(_clean(text[split:end], lang), MAX_SCENE_TOKENS * 3 // 5, keep_end=False)
        scenes.append(Scene(said + ("" if lang == "zh" else " ") + reply, line.output, line.offset, source))
    others = [text[s:e] for n, (s, e) in enumerate(quotes) if n not in own]
    return scenes, [x.output for x in lines], others


def idiom_scores(lines: list[str], others: list[str], lang: str) -> list[float]:
    """Mean smoothed log-odds of each line's units, hers against the other speakers' (her idiom)."""
    mine, theirs = Counter(g for x in lines for g in _grams(x, lang)), Counter(g for x in others for g in _grams(x, lang))
    n_mine, n_theirs, vocab = sum(mine.values()), sum(theirs.values()), len(set(mine) | set(theirs)) or 1
    a = 0.5

    def lo(g: str) -> float:
        return math.log((mine[g] + a) / (n_mine + a * vocab)) - math.log((theirs[g] + a) / (n_theirs + a * vocab))

    return [float(np.mean([lo(g) for g in gs])) if (gs := _grams(x, lang)) else 0.0 for x in lines]


def usable(scene: Scene, lang: str) -> bool:
    """Short, spoken to someone, not verse: a scene worth a place in the head."""
    n = len(re.sub(r"\W", "", scene.line)) if lang == "zh" else len(scene.line.split())
    if n < (6 if lang == "zh" else 5) or is_verse(scene.line):
        return False
    spoken = re.search(r"我|你|咱", scene.line) if lang == "zh" else re.search(r"\b(?:I|me|my|you|your)\b", scene.line)
    return bool(spoken) and _tokens(scene.text) <= MAX_SCENE_TOKENS


def choose(scenes: list[Scene], vectors: np.ndarray, budget: int, lang: str, diversity: float = 1.0,
           apart: int = 3000) -> list[Scene]:
    """Her most characteristic exchanges that fit ``budget`` tokens: idiom first, then unlike those chosen
    (maximal marginal relevance), from different pages (``apart`` characters) while a short book allows;
    returned in book order."""
    ok = [i for i, s in enumerate(scenes) if usable(s, lang)]
    if not ok:
        return []
    idiom = np.array([scenes[i].idiom for i in ok])
    utility = (idiom - idiom.mean()) / (idiom.std() or 1.0)
    chosen: list[int] = []
    used = 0
    for spread in (apart, 0):  # a short book has few pages: fill what is left without the spread
        left = [i for i in range(len(ok)) if i not in chosen]
        while left:
            score = utility[left]
            if chosen:
                score = score - diversity * (vectors[[ok[i] for i in left]] @ vectors[[ok[c] for c in chosen]].T).max(axis=1)
            pick = left.pop(int(np.argmax(score)))
            s = scenes[ok[pick]]
            cost = _tokens(s.text) + 1
            near = any(s.source == scenes[ok[c]].source and abs(s.offset - scenes[ok[c]].offset) < spread
                       for c in chosen)
            if used + cost <= budget and not near:
                chosen.append(pick)
                used += cost
    return sorted((scenes[ok[c]] for c in chosen), key=lambda s: (s.source, s.offset))


def nearest_lines(question_vec: np.ndarray, voice: BookVoice, k: int, floor: float = 0.25) -> list[str]:
    """Her ``k`` lines closest in meaning to the question (cosine at least ``floor``), best first."""
    if not voice or k <= 0:
        return []
    sims = voice.line_vectors @ question_vec
    order = np.argsort(-sims)[: k * 3]
    return [voice.lines[i] for i in order if sims[i] >= floor][:k]


# ------------------------------------------------------------------------------ cache
def _book_files(card: Card) -> list[Path]:
    from knowledge_base.reading import TEXT_SUFFIXES

    folder = texts_dir(card.id) if card.id else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)


def _key(card: Card, files: list[Path]) -> str:
    ident = [VERSION, card.names, card.lang] + [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode()).hexdigest()[:20]


def _embed(texts: list[str]) -> np.ndarray:
    from knowledge_base.embedders import get_embedder

    return get_embedder("use").embed(texts) if texts else np.zeros((0, 512), dtype=np.float32)


def embed_question(text: str) -> np.ndarray:
    return _embed([text])[0]


def book_voice(card: Card) -> BookVoice:
    """Her scenes and lines from every book in her texts (cached on disk until a book or her names change)."""
    files = _book_files(card)
    return _book_voice(card.id, card.lang, tuple(card.names), tuple(files), _key(card, files)) if files else \
        BookVoice([], [], np.zeros((0, 512), np.float32), np.zeros((0, 512), np.float32))


@lru_cache(maxsize=8)
def _book_voice(cid: str, lang: str, names: tuple[str, ...], files: tuple[Path, ...], key: str) -> BookVoice:
    from knowledge_base.reading import ReadError, read_text

    folder = paths().cache / "persona"
    meta, vecs = folder / f"{cid}-{key}.json", folder / f"{cid}-{key}.npz"
    if meta.is_file() and vecs.is_file():
        data = json.loads(meta.read_text(encoding="utf-8"))
        arrays = np.load(vecs)
        return BookVoice([Scene(**s) for s in data["scenes"]], data["lines"], arrays["lines"], arrays["scenes"])
    scenes, lines, others = [], [], []
    for path in files:
        try:
            text, _ = read_text(path)
        except (ReadError, OSError):
            continue  # the knowledge base reports unreadable books; here they only add no scenes
        s, ln, o = book_scenes(text, list(names), lang, path.name)
        scenes, lines, others = scenes + s, lines + ln, others + o
    for s, score in zip(scenes, idiom_scores([s.line for s in scenes], others, lang), strict=True):
        s.idiom = round(score, 4)
    voice = BookVoice(scenes, lines, _embed(lines), _embed([s.line for s in scenes]))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = vecs.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, lines=voice.line_vectors, scenes=voice.scene_vectors)
    tmp.replace(vecs)  # the vectors first: the JSON's presence says both are complete
    write_text_atomic(meta, json.dumps({"scenes": [asdict(s) for s in scenes], "lines": lines}, ensure_ascii=False))
    return voice


_EN_TAG = r"(said|cried|replied|returned|answered|observed|added|continued|exclaimed|thought|repeated|rejoined)"


def as_you(text: str, names: list[str], lang: str) -> str:
    """The scene told to her: her name in the narration becomes 你 / you (黛玉笑道 → 你笑道, "…," said
    Elizabeth → "…," you said), so the model reads the scenes as its own and does not learn to narrate
    her in the third person. What others say to her, inside the quotation marks, stays as written."""
    own = [n for n in sorted(names, key=len, reverse=True) if not n.startswith(("Miss ", "Mr", "Mrs"))]
    if not own:
        return text
    alias = "|".join(re.escape(n) for n in own)
    parts = re.split(r"(“[^”]*”|「[^」]*」|\"[^\"]*\")", text)
    for i in range(0, len(parts), 2):  # the narration between quotations
        if lang == "zh":
            parts[i] = re.sub(alias, "你", parts[i])
            continue
        part = re.sub(rf"\b{_EN_TAG}\s+(?:{alias})\b", r"you \1", parts[i])
        part = re.sub(rf"\b(?:{alias})'s\b", "your", part)
        part = re.sub(rf"\b(?:{alias})\b", "you", part)
        at_start = i == 0 or bool(re.search(r"[.!?][\"”]$", parts[i - 1]))
        lead = r"^\s*|[.!?]\s+" if at_start else r"[.!?]\s+"
        parts[i] = re.sub(rf"({lead})(you|your)\b", lambda m: m.group(1) + m.group(2).capitalize(), part)
    return "".join(parts)


def head_scenes(card: Card, budget: int) -> list[str]:
    """The scenes for her prompt's head within ``budget`` tokens, told to her (the same every time: cacheable)."""
    if budget <= 0:
        return []
    voice = book_voice(card)
    chosen = choose(voice.scenes, voice.scene_vectors, budget, card.lang) if voice else []
    return [as_you(s.text, card.names, card.lang) for s in chosen]

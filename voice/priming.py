"""What the microphone should expect: a short text of the conversation's names and words for Whisper.

Whisper base mishears a book's names as everyday homophones (颦儿 as 贫儿, Netherfield as "Nether
field"); a prompt that reads like text just before the speech pulls it toward the book's spelling.
The context is her names and aliases, the last turn, then the book's most frequent proper nouns,
most relevant first, cut to a token budget (Whisper's prompt window is 223 tokens, and every token
of it is one less for the answer in the 448-token decoding window).

    from voice.priming import listen
    heard = listen(audio_bytes, card, last_turn=f"{question} {answer}")   # the card's live store is read
    heard.text

``priming_context`` gives the prompt alone, for ``voice.transcribe(audio, lang, context=...)``; after
recognition, homophones of the names are put back (voice/correction.py, ``listening_names``), then
non-words that sound like the book's own words, and the whole transcript re-read with a model of the
book (``book_words``; voice/booklm.py). ``warm`` mines all of it before the first spoken question.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from knowledge_base.mined import per_version
from registry import Registry

log = logging.getLogger("voice")

# The whole context, in Whisper tokens: ~170 heard better than 120 (CER 0.285 vs 0.311 before correction,
# bench/asr_bench.py); with ZH_PROMPT it stays under voice.asr.MAX_PROMPT_TOKENS.
CONTEXT_TOKENS = 165
LAST_TURN_TOKENS = 45  # the last turn's share: its start, where the question and the answer's topic are
BOOK_TERMS = 80  # proper nouns kept per book: the prompt holds ~12, the correction takes them all
_CJK = re.compile(r"[\u4e00-\u9fff]")

# ---------------------------------------------------------------------------- token counting


@lru_cache(maxsize=1)
def _whisper_tokenizer() -> Any:
    """Whisper's own tokenizer (tokenizer.json of the packaged base model), or None when absent."""
    from settings import find_checkpoint
    from voice.models import WHISPER_BASE_DIR, WHISPER_BASE_PARTS, package_dir

    candidates = []
    found = find_checkpoint(WHISPER_BASE_DIR)
    if found is not None:
        candidates.append(found / "tokenizer.json")
    part = package_dir(WHISPER_BASE_PARTS[0])
    if part is not None:
        candidates.append(part / "data" / "tokenizer.json")
    for path in candidates:
        if path.is_file():
            try:
                import tokenizers

                return tokenizers.Tokenizer.from_file(str(path))
            except Exception as exc:  # a damaged file: fall back to the estimate
                log.warning("cannot read %s (%s); estimating prompt tokens", path, exc)
    return None


def count_tokens(text: str) -> int:
    """Whisper tokens in ``text`` as a prompt (with the leading space Whisper adds).

    Without the tokenizer, an upper estimate: a Chinese character is 1-3 tokens (1.5 on average
    for the book's names), an English word of up to 6 letters about one.
    """
    tok = _whisper_tokenizer()
    if tok is not None:
        return len(tok.encode(" " + text.strip(), add_special_tokens=False).ids)
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub("", text)
    return 2 * cjk + len(re.findall(r"\w{1,6}|[^\w\s]", rest))


def _cut(text: str, budget: int) -> str:
    """The longest start of ``text`` within ``budget`` tokens (cut at a character, by bisection)."""
    if count_tokens(text) <= budget:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


# ---------------------------------------------------------------------------- the book's proper nouns

# Per language: (texts=the store's chunk texts) -> [(term, count)], most frequent first.
TERM_MINERS: Registry[list[tuple[str, int]]] = Registry("proper-noun miner")
_ZH_PLACE = re.compile(r"(?=([\u4e00-\u9fff]{2}[园院馆府苑庵村斋轩阁寺庙宫堂]))")  # 大观园 潇湘馆 蘅芜苑 秋爽斋
_NOT_FIRST = "至过往到在进入回出于了从向"  # 至宁府, 过荣府: a verb before a short name (宁府)


# Speakers that are roles, not names (婆子道：, 小丫头道：): common in every novel, no help to the ear.
_ZH_ROLES = set("婆子 老婆子 小丫头 丫头 丫鬟 小厮 众人 大家 媳妇 老爷 太太 奶奶 姑娘 二人 两个 那人 "
                "三人 四人 夫人 妇人 家人 下人 别人 主人 客人 本人 小丫头子 半日".split())
_ZH_REN_SPEAKER = re.compile(r"(?:^|[。！？，：”\s])([\u4e00-\u9fff]{1,2}人)(?:冷笑|笑|忙|便|又|因|也|听了|叹)?说?道[：:]", re.M)


def _everyday(word: str, count: int, chars: int) -> bool:
    """True for a word not 20 times more frequent in the book than in jieba's general dictionary
    (大家, 心里, 点头); 宝玉 (a common word too) is 58 times more frequent in 红楼梦."""
    # The dictionary the knowledge base already loaded, not a second copy.
    from knowledge_base.keywords import _base_jieba

    jieba = _base_jieba()
    return count / max(chars, 1) < 20 * jieba.FREQ.get(word, 0) / jieba.total


@TERM_MINERS.register("zh")
def _zh_terms(texts: list[str]) -> list[tuple[str, int]]:
    """People (the book's speakers: 宝玉道：) and places (潇湘馆, 怡红院, 栊翠庵), by frequency.

    Places are fewer and rarer than people; every third term is a place so both are primed.
    """
    from dialogue import mine_zh_names

    book = "\n".join(texts)
    # mine_zh_names never takes a name with 人 in it (人道 is too often "people say"); 袭人道： and
    # 王夫人笑道： are wanted here, so speakers ending in 人 are counted apart.
    ren = Counter(m.group(1) for m in _ZH_REN_SPEAKER.finditer(book))
    speakers = mine_zh_names(book) | {n for n, c in ren.items() if c >= 5}
    # Sorted: a set's order changes from process to process, and ties (馒头庵/贾赦) must rank the same every time.
    people = Counter({n: book.count(n) for n in sorted(speakers) if n not in _ZH_ROLES})
    # Places: a name of two characters and a place word (潇湘馆, 栊翠庵) whose two characters are, most of
    # the time, that place (not 只见院: 只见 is mostly something else). jieba splits many (潇湘/馆).
    grams = Counter(m.group(1) for m in _ZH_PLACE.finditer(book))
    places = Counter({w: n for w, n in grams.items()
                      if n >= 5 and w[0] not in _NOT_FIRST and n >= 0.5 * book.count(w[:2])})
    ranked = [[(w, n) for w, n in c.most_common() if not _everyday(w, n, len(book))] for c in (people, places)]
    out: list[tuple[str, int]] = []
    while ranked[0] or ranked[1]:
        for kind, take in ((0, 2), (1, 1)):
            out.extend(ranked[kind][:take])
            del ranked[kind][:take]
    return out


# Capitalised words that are not names even mid-sentence.
_EN_COMMON = set("I Mr Mrs Miss Sir Lady Lord Dr Colonel Captain God Chapter Volume The A An And But "
                 "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May "
                 "June July August September October November December English England Oh Ah St Aye Christmas".split())


@TERM_MINERS.register("en")
def _en_terms(texts: list[str]) -> list[tuple[str, int]]:
    """Words nearly always capitalised, also in mid-sentence (Darcy, Netherfield, Lydia), by frequency."""
    caps: Counter[str] = Counter()
    lower: Counter[str] = Counter()
    for text in texts:
        text = re.sub(r"\b(Mr|Mrs|Ms|Dr|St)\.", r"\1", text)  # "Mr. Collins" is no sentence start
        for m in re.finditer(r"(?<![.!?\"“‘]\s)(?<!^)\b([A-Za-z][a-z]+)\b", text, re.M):
            word = m.group(1)
            (caps if word[0].isupper() else lower)[word.lower()] += 1
    # In a whole novel a word capitalised a few times may be a heading's; in a short text it is all we have.
    least = 5 if sum(map(len, texts)) > 20000 else 2
    out = []
    for word, n in caps.items():
        if n >= least and lower[word] * 10 < n:
            name = word.capitalize()
            if name not in _EN_COMMON:
                out.append((name, n))
    return sorted(out, key=lambda t: -t[1])


def book_terms(card: Any, store: Any = None) -> list[str]:
    """The book's most frequent proper nouns, her own names left out; computed once per store version.

    ``store``: a KnowledgeStore, a store folder or version folder, or None for the card's live store.
    No store (no book yet) gives no terms.
    """
    own = set(card.names)

    def mine(texts: list[str]) -> list[str]:
        mined = TERM_MINERS.create(card.lang, texts=texts) if card.lang in TERM_MINERS else []
        return [t for t, _ in mined if not any(t in n or n in t for n in own)][:BOOK_TERMS]

    return per_version("proper nouns", card, store, mine, [])


def book_words(card: Any, store: Any = None) -> Any:
    """The book's words by sound (voice.correction.BookWords) for a Chinese book, else None; once per
    store version, as :func:`book_terms`."""
    if card.lang != "zh":
        return None
    from voice.correction import BookWords

    names = [*_her_names(card), *book_terms(card, store)]
    return per_version("words", card, store, lambda texts: BookWords.mine(texts, names), None)


# ---------------------------------------------------------------------------- the context


def _her_names(card: Any) -> list[str]:
    """Her name, then her aliases as the card lists them (Card.names is a set's order, not stable)."""
    return [n for n in dict.fromkeys([card.name, *card.aliases]) if n]


def _listing(words: Iterable[str], lang: str) -> str:
    words = [w for w in words if w]
    if not words:
        return ""
    return ("、".join(words) + "。") if lang == "zh" else (", ".join(words) + ".")


def _distinct(words: Iterable[str], lang: str) -> list[str]:
    """``words`` in order, without those another kept one already spells (黛玉 after 林黛玉, 凤姐儿 after
    凤姐; Miss Bennet after Miss Elizabeth Bennet): each token of the budget should bring a new name."""
    taken: list[str] = []
    for w in dict.fromkeys(words):
        if lang == "zh":
            covered = any(w in t or t in w for t in taken)
        else:
            covered = set(w.split()) <= {x for t in taken for x in t.split()}
        if w and not covered:
            taken.append(w)
    return taken


def _fill(words: list[str], lang: str, budget: int) -> str:
    """As many of ``words`` (in order) as fit in ``budget`` tokens, as a list sentence."""
    taken: list[str] = []
    for w in words:
        if count_tokens(_listing([*taken, w], lang)) > budget:
            break
        taken.append(w)
    return _listing(taken, lang)


def priming_context(card: Any, last_turn: str = "", store: Any = None,
                    max_tokens: int = CONTEXT_TOKENS) -> str:
    """A short text to prime speech recognition: her names, the book's proper nouns, the last turn.

    Chosen most relevant first within ``max_tokens`` Whisper tokens (her names, then the last turn's
    start, then as many of the book's names as fit), but the last turn is placed last: Whisper reads
    its prompt as the text just before what it hears, and a list there is continued as a list
    (宝玉、杰林、...), whereas the turn before reads on into a question (CER 0.286 -> 0.255 heard,
    bench/asr_bench.py). ``card`` is a characters.Card; ``last_turn`` the previous question and
    answer; ``store`` as in :func:`book_terms`.
    """
    lang = card.lang
    sep = "" if lang == "zh" else " "
    names = _fill(_distinct(_her_names(card), lang), lang, max_tokens)
    turn = re.sub(r"\s+", " ", last_turn or "").strip()
    room = max_tokens - count_tokens(names) - 1
    turn = _cut(turn, min(LAST_TURN_TOKENS, room)) if turn and room > 4 else ""
    room = max_tokens - count_tokens(sep.join(p for p in (names, turn) if p)) - 2
    said = names + turn
    terms = [t for t in _distinct(book_terms(card, store), lang) if t not in said]
    listed = _fill(terms, lang, room) if room > 4 else ""
    return _cut(sep.join(p for p in (names, listed, turn) if p), max_tokens)


def _turn_words(last_turn: str, lang: str) -> list[str]:
    """The last turn's own words (its names, 园子): the person often says again what was just said."""
    if lang == "zh":
        from knowledge_base.keywords import ZH_STOP, _base_jieba

        words = _base_jieba().lcut(last_turn, HMM=False)
        return [w for w in words if len(w) >= 2 and _CJK.fullmatch(w[0]) and w not in ZH_STOP]
    return re.findall(r"\b[A-Z][a-z]{4,}\b", last_turn)


def listening_names(card: Any, store: Any = None, last_turn: str = "") -> list[str]:
    """The names a transcript is corrected toward: all of hers (黛玉 too, which the prompt leaves to
    林黛玉), the book's (more than the prompt holds: correction costs no prompt tokens), then the
    last turn's words."""
    return list(dict.fromkeys([*_her_names(card), *book_terms(card, store), *_turn_words(last_turn, card.lang)]))


def warm(card: Any, store: Any = None) -> None:
    """Mine what the first spoken question would wait for (~7 s for 红楼梦 on 2 cores, once per store version)."""
    book_terms(card, store)
    book_words(card, store)


def listen(audio: str | Path | bytes, card: Any, last_turn: str = "", store: Any = None,
           engine: str | None = None) -> Any:
    """What the person said to ``card``'s character: recognition primed with her names, the last turn
    (question and answer) and her book's, then homophones of those names put back. A voice.Transcript;
    bad or silent audio raises voice.VoiceError, as voice.transcribe does."""
    from settings import load_settings
    from voice.asr import transcribe

    context = priming_context(card, last_turn, store)
    return transcribe(audio, lang=card.lang, engine=engine or load_settings().asr_engine, context=context,
                      names=listening_names(card, store, last_turn), words=book_words(card, store))

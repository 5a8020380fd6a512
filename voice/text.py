"""Text handling for speech: sentences, language runs by script, numbers read in Chinese."""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from language import CJK, detect_lang, has_cjk  # noqa: F401  (detect_lang, has_cjk: part of this module's API)
from sentences import ABBREV, SENT_END, split_sentences  # noqa: F401  (split_sentences: part of this module's API)

_CJK_RE = re.compile(f"[{CJK}]")
_LATIN_RE = re.compile(r"[A-Za-z\u00c0-\u024f]")


@dataclass
class Run:
    """A stretch of text in one language ('zh' or 'en')."""

    text: str
    lang: str


def split_runs(text: str, lang: str = "auto") -> list[Run]:
    """Split mixed text by script into runs of one language each.

    Neutral characters (digits, spaces, punctuation) stay with the run they are in, so
    '我今年18岁' is one Chinese run and 'Hello, 世界' is 'Hello, ' + '世界'.
    """
    default = detect_lang(text, "en") if lang == "auto" else lang
    runs: list[Run] = []
    cur_lang: str | None = None
    buf = ""
    for ch in text:
        kind = "zh" if _CJK_RE.match(ch) else "en" if _LATIN_RE.match(ch) else None
        if kind is None or kind == cur_lang or cur_lang is None:
            buf += ch
            cur_lang = cur_lang or kind
            continue
        runs.append(Run(buf, cur_lang))
        buf, cur_lang = ch, kind
    if buf:
        runs.append(Run(buf, cur_lang or default))
    # Keep only runs with something to say; punctuation-only runs join their neighbour.
    merged: list[Run] = []
    for run in runs:
        if merged and not re.search(r"\w", run.text):
            merged[-1].text += run.text
        else:
            merged.append(run)
    return [r for r in merged if re.search(r"\w", r.text)]


class SentenceBuffer:
    """Collects streamed tokens and hands out each sentence as soon as it is complete."""

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, token: str) -> list[str]:
        """Add a token; return the sentences it completed."""
        self._buf += token
        cut = 0
        for m in SENT_END.finditer(self._buf):
            end = m.end()
            if end == len(self._buf) and m.group().startswith("."):
                continue  # '3.' may become '3.14', 'Mr.' may be followed by a name: wait for more
            if self._buf[:end].rstrip().endswith(ABBREV):
                continue
            cut = end
        if not cut:
            return []
        done, self._buf = self._buf[:cut], self._buf[cut:]
        return split_sentences(done)

    def flush(self) -> list[str]:
        """Whatever is left when the stream ends."""
        rest, self._buf = self._buf, ""
        return split_sentences(rest)


# A reader answer's source note, written for the eye: （见第41回）, (Chapter 12), (see Chapters 3 and 4).
_CITATION = re.compile(r"\s*(?:[（(]\s*(?:见|参见|详见)?\s*第\s*[0-9０-９零〇一二三四五六七八九十百两]+\s*回[^（）()]{0,12}[）)]"
                       r"|\(\s*(?:see\s+)?chapters?\s+[0-9IVXLC]+(?:\s*(?:,|and|&|-|–)\s*[0-9IVXLC]+)*\s*\))",
                       re.IGNORECASE)


def unspoken(sentence: str) -> str:
    """``sentence`` as it is read aloud: without its source notes (the page shows them; spoken, 见第四十一回
    is a second clip of nothing but a chapter number)."""
    return _CITATION.sub("", sentence).strip()


def sentences_from_tokens(tokens: Iterable[str]) -> Iterator[str]:
    """Turn a token stream into a sentence stream."""
    buf = SentenceBuffer()
    for token in tokens:
        yield from buf.feed(token)
    yield from buf.flush()


_DIGITS = "零一二三四五六七八九"
_UNITS = ["", "十", "百", "千"]


def _four(n: int) -> str:
    s, zero = "", False
    for i in range(3, -1, -1):
        d = n // 10**i % 10
        if d == 0:
            zero = bool(s)
            continue
        if zero:
            s += "零"
            zero = False
        s += _DIGITS[d] + _UNITS[i]
    return s


def int_to_chinese(n: int) -> str:
    """Read an integer the Chinese way: 18 -> 十八, 10005 -> 一万零五."""
    if n == 0:
        return "零"
    if n < 0:
        return "负" + int_to_chinese(-n)
    big = ["", "万", "亿", "万亿"]
    chunks: list[int] = []
    while n:
        n, chunk = divmod(n, 10_000)
        chunks.append(chunk)
    text = ""
    for i in range(len(chunks) - 1, -1, -1):
        chunk = chunks[i]
        if chunk == 0:
            continue
        if text and (chunk < 1000 or chunks[i + 1] == 0) and not text.endswith("零"):
            text += "零"
        text += _four(chunk) + big[i]
    return text[1:] if text.startswith("一十") else text


def numbers_to_chinese(text: str) -> str:
    """Replace Arabic numbers (and decimals, percents) by Chinese numerals for engines that need words."""

    def one(m: re.Match[str]) -> str:
        whole, frac, pct = m.group(1), m.group(2), m.group(3)
        if len(whole) > 12:  # a long code, read digit by digit
            words = "".join(_DIGITS[int(c)] for c in whole)
        else:
            words = int_to_chinese(int(whole))
        if frac:
            words += "点" + "".join(_DIGITS[int(c)] for c in frac)
        return ("百分之" + words) if pct else words

    return re.sub(r"(\d+)(?:\.(\d+))?(%?)", one, re.sub(r"(?<=\d),(?=\d{3})", "", text))

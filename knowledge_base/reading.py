"""Read a user's book whatever its encoding, and find its chapters.

Handles UTF-8 (with or without BOM), UTF-16 (BOM or not), GB18030/GBK, Big5 and
whatever charset-normalizer recognises; refuses binaries with a clear message.
"""
from __future__ import annotations

import codecs
import html
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from charset_normalizer import from_bytes

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text", ".epub", ""}
# Numbers as English headings spell them: "Chapter One", "CHAPTER TWENTY-THREE", "Chapter the First".
_ONES = "one|two|three|four|five|six|seven|eight|nine"
_TEENS = "ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen"
_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_ONES_TH = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"
_TEENS_TH = "tenth|eleventh|twelfth|" + "|".join(t + "th" for t in _TEENS.split("|")[3:])
_TENS_TH = "twentieth|thirtieth|fortieth|fiftieth|sixtieth|seventieth|eightieth|ninetieth"
_SPELLED = (rf"(?:the\s+)?(?:(?:{_TENS})[- ](?:{_ONES_TH}|{_ONES})|{_TENS_TH}|{_TEENS_TH}|{_ONES_TH}"
            rf"|{_TENS}|{_TEENS}|{_ONES})")
# Chinese novels: 第一回 / 第12章 / 第一百二十回 / 第一部, and the unnumbered 楔子, 序章, 尾声 ...; English: Chapter 1 /
# CHAPTER XII / Chapter One / Book the First / Part 2 / Letter 4 / Stave One, each alone on its line.
_CHAPTER_RE = re.compile(
    r"^[ \t\u3000]*(?:"
    r"第[零〇一二两三四五六七八九十百千\d]+[回章节卷部][^\n]{0,40}"
    r"|(?:楔子|序章|序幕|引子|尾声|终章|后记)(?:[ \t\u3000]+[^\n]{0,40})?"
    rf"|(?i:(?:chapter|book|part|volume|letter|stave)\s+(?:\d+|[IVXLCDM]+|{_SPELLED})\b)[^\n]{{0,60}}"
    r")[ \t\u3000]*$",
    re.MULTILINE,
)
_TAG_RE = re.compile(r"</?(?:p|br|div|span|i|b|em|strong|h\d|font|a)(?:\s[^>]*)?/?>", re.IGNORECASE)


class ReadError(ValueError):
    """A file that cannot be read as text; the message says why and what to do."""


@dataclass
class Chapter:
    title: str
    start: int  # character offset in Document.text


@dataclass
class Document:
    path: Path
    text: str
    encoding: str
    chapters: list[Chapter] = field(default_factory=list)

    def chapter_at(self, offset: int) -> str:
        """The title of the chapter that contains a character offset ('' before the first)."""
        title = ""
        for ch in self.chapters:
            if ch.start > offset:
                break
            title = ch.title
        return title


def _looks_binary(raw: bytes) -> bool:
    sample = raw[:8192]
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in sample:
        # Text never holds NULs, except UTF-16 without a BOM (recognised by what it decodes to).
        return _utf16_without_bom(sample) is None
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return control > len(sample) // 20


# The most frequent Chinese characters, simplified and traditional: the right decoding of a
# Chinese book is full of them, a wrong one (Big5 bytes read as GBK) almost never.
_COMMON_HANZI = set(
    "了的不一来道人是说我这他你去着也儿玉有宝个子又贾里那们见只太便好在笑家上么得大姐头听就出回知日要下都"
    "心事二老过话还起自如看叫到没两母些时之今小问因凤奶等娘可什呢忙夫想面才爷中王打进此倒罢样吃和正姑无几后"
    "黛天然前为意再别门丫走外作三袭怎众妹生方多将明已身把以气何钗亲给拿与手坐十年用若请房且发薛春命妈政原花"
    "姨所处先平边己谁琏瞧住管内女死送连至早告东会香林往西月虽带应必口从分怕四声当放未能云却安点眼哥理敢开喜"
    "李成地金字书红难情病真竟半并官姥跟诉句咱更婆酒银各白湘向哭同园使言觉五钱府于名紫定少快比珍主或该做答探"
    "闹行而尤睡件经氏屋故茶间常果夜接风饭细语相脸干张衣鹃找妇鸳忽既神鸯思本邢其者入完水急但色算底來說這著兒"
    "寶個賈裡們見麼頭聽過話還沒兩時問鳳爺進罷樣無幾後為別門襲眾將氣釵親給與請發媽處邊誰璉內連東會雖帶應從聲"
    "當雲卻點開書紅難並訴銀園覺錢於該鬧經間風飯細語臉幹張鵑婦鴛鴦"
)


def _text_like(ch: str) -> bool:
    """A character of ordinary prose: ASCII, Latin letters, CJK ideographs or punctuation."""
    o = ord(ch)
    return (32 <= o < 0x250 or ch in "\n\r\t" or 0x4E00 <= o <= 0x9FFF or 0x3000 <= o <= 0x303F
            or 0xFF00 <= o <= 0xFFEF or 0x2000 <= o <= 0x206F)


def _utf16_without_bom(sample: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when the bytes are UTF-16 text with no BOM, else None.

    Checked before UTF-8, because ASCII text in UTF-16 is also valid UTF-8 (with NULs),
    and before the binary test, because Chinese in UTF-16 has NULs only here and there.
    A binary read as UTF-16 scatters over the whole of Unicode; prose stays in a few blocks.
    """
    sample = sample[:4096]
    if b"\x00" not in sample:
        return None
    sample = sample[: len(sample) // 2 * 2]
    for enc in ("utf-16-le", "utf-16-be"):
        text = sample.decode(enc, errors="replace")
        if text and sum(map(_text_like, text)) >= 0.9 * len(text):
            return enc
    return None


def _chinese_legacy(raw: bytes) -> tuple[str, str] | None:
    """GB18030 or Big5, whichever decodes strictly and reads as common Chinese; None if neither."""
    decoded = []
    for enc in ("gb18030", "big5"):
        try:
            decoded.append((raw.decode(enc), enc))
        except UnicodeDecodeError:
            continue
    if not decoded:
        return None
    # GB18030 accepts nearly any byte pair, so Big5 text usually decodes as GB18030 too,
    # into nonsense: keep the decoding with the most common characters.
    return max(decoded, key=lambda d: sum(ch in _COMMON_HANZI for ch in d[0][:100_000]))


def decode(raw: bytes) -> tuple[str, str]:
    """Decode bytes of a text file; returns (text, encoding name)."""
    if raw.startswith(codecs.BOM_UTF8):
        return raw[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace"), "utf-16"
    sample = raw[:200_000]
    enc16 = _utf16_without_bom(sample)
    if enc16:
        return raw.decode(enc16, errors="replace"), enc16
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # Chinese books are usually GB18030 (a superset of GBK/GB2312) or Big5; try the strict
    # decoders first, since statistical detection confuses them on short samples.
    legacy = _chinese_legacy(raw)
    if legacy:
        return legacy
    best = from_bytes(sample).best()
    if best is None:
        raise ReadError("could not recognise the text encoding; save the file as UTF-8 and try again.")
    enc = best.encoding
    return raw.decode(enc, errors="replace"), enc


def normalise(text: str) -> str:
    """Unify line endings, drop stray HTML markup and entities, trim trailing spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    if "<" in text:
        text = _TAG_RE.sub("\n", text)
    if "&" in text:
        text = html.unescape(text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def find_chapters(text: str) -> list[Chapter]:
    """Chapter headings (第X回 / 第X章 / 楔子 / Chapter N / Chapter One / Book the First) with their offsets."""
    found = []
    for m in _CHAPTER_RE.finditer(text):
        head = m.group(0)
        # Offset of the heading's first visible character, so it matches paragraph offsets.
        found.append(Chapter(re.sub(r"\s+", " ", head.strip()), m.start() + len(head) - len(head.lstrip())))
    return found


def _epub_text(path: Path, max_bytes: int) -> bytes:
    """The XHTML chapters of an EPUB (a zip), in archive order, as UTF-8 bytes.

    A zip can inflate a thousandfold: the chapters' uncompressed total is capped at ``max_bytes``,
    first by what the archive declares, then by what is really read, 1 MB at a time, so a small
    "zip bomb" is refused in bounded memory instead of being inflated whole.
    """
    limit_mb = max_bytes // 2**20
    too_big = (f"{path.name} inflates to more than {limit_mb} MB of text (a compressed 'zip bomb' or a "
               f"huge book); split the book into parts, or save it as plain text (.txt).")
    parts: list[str] = []
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = sorted((i for i in zf.infolist() if i.filename.lower().endswith((".xhtml", ".html", ".htm"))),
                           key=lambda i: i.filename)
            if sum(i.file_size for i in infos) > max_bytes:
                raise ReadError(too_big)
            for info in infos:
                chunks: list[bytes] = []
                with zf.open(info) as fh:
                    while block := fh.read(1 << 20):
                        total += len(block)
                        if total > max_bytes:  # the declared sizes lied
                            raise ReadError(too_big)
                        chunks.append(block)
                parts.append(b"".join(chunks).decode("utf-8", errors="replace"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise ReadError(f"{path.name} is not a valid EPUB file ({exc}).") from exc
    body = "\n".join(re.sub(r"<[^>]+>", "\n", re.sub(r"(?s)<head.*?</head>", "", p)) for p in parts)
    return body.encode("utf-8")


def read_document(path: str | Path, max_bytes: int = 200 * 1024 * 1024) -> Document:
    """Read one book file into a Document, or raise ReadError saying what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ReadError(f"{p} does not exist or is not a file.")
    suffix = p.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise ReadError(f"{p.name}: unsupported file type '{suffix}'; use .txt, .md or .epub.")
    size = p.stat().st_size
    if size == 0:
        raise ReadError(f"{p.name} is empty; nothing to add.")
    if size > max_bytes:
        raise ReadError(f"{p.name} is {size // 2**20} MB, over the {max_bytes // 2**20} MB limit; split it into parts.")
    raw = _epub_text(p, max_bytes) if suffix == ".epub" else p.read_bytes()
    if _looks_binary(raw):
        raise ReadError(f"{p.name} looks like a binary file, not text; skipped. Save the book as plain text (.txt).")
    text, encoding = decode(raw)
    text = normalise(text)
    if not text:
        raise ReadError(f"{p.name} holds no text after cleaning; nothing to add.")
    return Document(path=p, text=text, encoding=encoding, chapters=find_chapters(text))


def read_text(path: str | Path) -> tuple[str, str]:
    """Convenience: (clean text, encoding) of a file."""
    doc = read_document(path)
    return doc.text, doc.encoding

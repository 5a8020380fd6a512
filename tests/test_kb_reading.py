"""Reading any encoding, markup and EPUB, chapters, and chunking (the knowledge base's first two stages)."""
from __future__ import annotations

import codecs

import pytest

from knowledge_base.chunking import chunk_document
from knowledge_base.reading import ReadError, decode, normalise, read_document
from tests.kb_books import (
    EN_CHAPTERS,
    EN_TEXT,
    ZH_CHAPTERS,
    ZH_TEXT,
    make_epub,
    read_document_from_text,
    write,
)


# ---- reading: encodings, markup, chapters ------------------------------------------------------
@pytest.mark.parametrize(
    "encoding, prefix",
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-16-le", b""),  # UTF-16 without a BOM (Windows Notepad "Unicode" minus the mark)
        ("gb18030", b""),
    ],
)
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_encoding_reads_to_the_same_text_with_chapters(tmp_path, encoding, prefix, lang):
    text, chapters = (ZH_TEXT, ZH_CHAPTERS) if lang == "zh" else (EN_TEXT, EN_CHAPTERS)
    path = tmp_path / "book.txt"
    path.write_bytes(prefix + text.encode(encoding))
    doc = read_document(path)
    assert doc.text == normalise(text)
    assert "\x00" not in doc.text and "\ufeff" not in doc.text
    assert [c.title for c in doc.chapters] == list(chapters)
    for ch in doc.chapters:  # every offset points at its heading
        assert doc.text[ch.start:].startswith(ch.title)


def test_big5_traditional_chinese_is_not_read_as_gb18030(tmp_path):
    # Traditional text in Big5: GB18030 also decodes these bytes (into nonsense); Big5 must win.
    trad = (
        "第一回 林黛玉拋父進京都\n\n黛玉自幼體弱多病，每日還吃著人參養榮丸。賈母一見外孫女，便摟入懷中大哭起來。\n\n"
        "第二回 賈寶玉品茶櫳翠庵\n\n妙玉另泡了一壺茶，用的是五年前收的梅花上的雪。寶玉說這個妹妹我曾見過的。\n"
    )
    path = write(tmp_path / "trad.txt", trad, "big5")
    doc = read_document(path)
    assert doc.encoding == "big5"
    assert doc.text == normalise(trad)
    assert [c.title for c in doc.chapters] == ["第一回 林黛玉拋父進京都", "第二回 賈寶玉品茶櫳翠庵"]


def test_chapter_heading_styles():
    text = normalise(
        "序\n\n第十二章 风雪山神庙\n\n正文。\n\n　　第一百二十回 甄士隐详说太虚情\n\n正文。\n\n"
        "CHAPTER XII\n\nBody.\n\nChapter 7. The Ball\n\nBody. In chapter 3 we saw nothing.\n"
    )
    from knowledge_base.reading import find_chapters

    titles = [c.title for c in find_chapters(text)]
    assert titles == ["第十二章 风雪山神庙", "第一百二十回 甄士隐详说太虚情", "CHAPTER XII", "Chapter 7. The Ball"]


def test_spelled_out_and_unnumbered_headings_are_chapters():
    text = normalise(
        "楔子\n\n正文。\n\n第一部 风起\n\n正文。\n\n尾声 归来\n\n正文。\n\nCHAPTER ONE\n\nBody.\n\n"
        "Chapter the First\n\nBody.\n\nCHAPTER TWENTY-THREE. The End\n\nBody.\n\nBook II\n\nLetter 4\n\n"
        "STAVE ONE.\n\nBody. The chapter one was long.\n\nChapter oneself\n\nPart of me\n"
    )
    from knowledge_base.reading import find_chapters
    from prompting import chapter_label

    titles = [c.title for c in find_chapters(text)]
    assert titles == ["楔子", "第一部 风起", "尾声 归来", "CHAPTER ONE", "Chapter the First", "CHAPTER TWENTY-THREE. The End",
                      "Book II", "Letter 4", "STAVE ONE."]
    assert [chapter_label(t) for t in titles] == ["楔子", "第一部", "尾声 归来", "CHAPTER ONE", "Chapter the First",
                                                  "CHAPTER TWENTY-THREE", "Book II", "Letter 4", "STAVE ONE"]
    assert chapter_label("第十二章 风雪山神庙") == "第十二章"


def test_html_paragraph_markup_and_crlf_are_normalised(tmp_path):
    html = "".join(f"<p>{t}</p>\r\n" + "".join(f"<p class='x'>{p}</p>\r\n" for p in ps) for t, ps in ZH_CHAPTERS.items())
    html = html.replace("妙玉", "妙玉&amp;").replace("紫鹃", "紫鹃<br/>")
    doc = read_document(write(tmp_path / "web.txt", html))
    assert "<" not in doc.text and ">" not in doc.text and "\r" not in doc.text
    assert "妙玉&亲自" in doc.text  # entities unescaped
    assert [c.title for c in doc.chapters] == list(ZH_CHAPTERS)


def test_markdown_file_is_read(tmp_path):
    doc = read_document(write(tmp_path / "notes.md", EN_TEXT))
    assert doc.text == normalise(EN_TEXT)
    assert len(doc.chapters) == 3


def test_epub_is_read_in_order_without_markup(tmp_path):
    doc = read_document(make_epub(tmp_path / "pride.epub", EN_CHAPTERS))
    assert [c.title for c in doc.chapters] == list(EN_CHAPTERS)
    assert "<" not in doc.text and "BOOK TITLE" not in doc.text and "margin" not in doc.text
    assert "not handsome enough to tempt me" in doc.text
    assert doc.text.index("Netherfield Park") < doc.text.index("Kitty coughed")


def test_chunks_carry_their_chapter_and_never_straddle_chapters():
    doc = read_document_from_text(ZH_TEXT)
    chunks = chunk_document(doc, "hong.txt")
    assert {c.chapter for c in chunks} == set(ZH_CHAPTERS)
    for c in chunks:
        others = [t for t in ZH_CHAPTERS if t != c.chapter]
        assert not any(p in c.text for t in others for p in ZH_CHAPTERS[t])
        assert len(c.text) <= 300 + 60 + 50  # target + overlap + one heading's slack
    assert len({c.id for c in chunks}) == len(chunks)


def test_plain_ascii_decodes_and_a_binary_is_refused(tmp_path):
    assert decode(b"plain ascii")[0] == "plain ascii"
    junk = write(tmp_path / "photo.txt", "")
    junk.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ReadError, match="binary"):
        read_document(junk)

"""An EPUB is a zip: one that inflates to gigabytes is refused with a sentence, in bounded memory."""
from __future__ import annotations

import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from knowledge_base.reading import ReadError, read_document

GB2 = 2 * 2**30


def _deflate_of_repeats(total: int, block: int = 1 << 24) -> bytes:
    """A raw deflate stream of ``total`` bytes of 'a', built from one fully flushed block repeated
    (each segment is independent after a full flush), so making it costs milliseconds, not a 2 GB pass."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = c.compress(b"a" * block) + c.flush(zlib.Z_FULL_FLUSH)
    return segment * (total // block) + b"\x03\x00"  # an empty final block ends the stream


def bomb_epub(path: Path, inflated: int = GB2, declared: int | None = None) -> Path:
    """A zip (zip64) with one chapter whose deflated data inflates to ``inflated`` bytes.

    ``declared`` is the uncompressed size its headers claim (the truth by default; a liar may claim less).
    """
    name = b"OEBPS/chapter1.xhtml"
    data = _deflate_of_repeats(inflated)
    size = inflated if declared is None else declared
    extra = struct.pack("<HHQQ", 1, 16, size, len(data))  # zip64: uncompressed, compressed
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0x21, 0, 0xFFFFFFFF, 0xFFFFFFFF,
                        len(name), len(extra)) + name + extra
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 8, 0, 0x21, 0, 0xFFFFFFFF, 0xFFFFFFFF,
                          len(name), len(extra), 0, 0, 0, 0, 0) + name + extra
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return path


def test_a_tiny_epub_that_inflates_to_2_gb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    epub = bomb_epub(tmp_path / "bomb.epub")
    assert epub.stat().st_size < 4 * 2**20  # a few MB on disk
    with zipfile.ZipFile(epub) as zf:  # a well-formed archive that really claims 2 GB
        assert zf.infolist()[0].file_size == GB2
    tracemalloc.start()
    try:
        with pytest.raises(ReadError, match="inflates to more than 200 MB"):
            read_document(epub)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_an_epub_whose_headers_understate_its_size_is_still_refused(tmp_path: Path) -> None:
    # Claims 1 KB but holds 300 MB: zipfile stops at the claimed size (then its CRC fails) and the reader
    # counts what it inflates, 1 MB at a time; either way it is refused without inflating it all.
    epub = bomb_epub(tmp_path / "liar.epub", inflated=300 * 2**20, declared=1024)
    tracemalloc.start()
    try:
        with pytest.raises(ReadError):
            read_document(epub, max_bytes=8 * 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20

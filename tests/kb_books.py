"""Small books and helpers shared by the knowledge-base tests (test_knowledge_base.py, test_kb_reading.py)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from knowledge_base.reading import Document, find_chapters, normalise
from settings import paths

REPO = Path(__file__).resolve().parent.parent

# ---- small books written for these tests ------------------------------------------------------
ZH_CHAPTERS = {
    "第一回 林黛玉抛父进京都": [
        "却说黛玉自那日弃舟登岸时，便有荣国府打发了轿子并拉行李的车辆久候了。",
        "黛玉自幼体弱多病，从会吃饮食时便吃药，如今每日还吃着人参养荣丸。",
        "贾母一见外孙女，便搂入怀中，心肝儿肉叫着大哭起来，众人无不掩面涕泣。",
        "宝玉看罢，笑道：“这个妹妹我曾见过的。”贾母笑道：“可又是胡说，你又何曾见过他？”",
    ],
    "第二回 贾宝玉品茶栊翠庵": [
        "妙玉亲自向风炉上扇滚了水，另泡了一壶茶，用的是五年前收的梅花上的雪。",
        "宝钗笑道：“你这茶是旧年蠲的雨水么？”妙玉冷笑道：“你这么个人，竟是大俗人，连水也尝不出来。”",
        "刘姥姥吃了一口，笑道：“好是好，就是淡些，再熬浓些更好了。”众人都笑起来。",
    ],
    "第三回 潇湘馆春困发幽情": [
        "那潇湘馆里凤尾森森，龙吟细细，一带翠竹掩着粉垣，窗下案上设着笔砚。",
        "紫鹃端了一盏龙井茶来，黛玉只吃了一口，便又歪在床上看书。",
        "宝玉在窗外听见黛玉细细的长叹了一声道：“每日家情思睡昏昏。”",
    ],
}
EN_CHAPTERS = {
    "Chapter 1": [
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.",
        '"My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park '
        'is let at last?"',
        "Mr. Bennet replied that he had not, and his wife told him that a young man of large fortune "
        "from the north of England had taken it.",
    ],
    "Chapter 2": [
        "Mr. Bennet was among the earliest of those who waited on Mr. Bingley. He had always intended "
        "to visit him, though to the last always assuring his wife that he should not go.",
        "Kitty coughed all the time, and her mother scolded her for having no discretion in her coughs.",
    ],
    "Chapter 3": [
        "Mr. Darcy looked at Elizabeth and coldly said: \"She is tolerable, but not handsome enough to "
        'tempt me; I am in no humour at present to give consequence to young ladies who are slighted."',
        "Elizabeth remained with no very cordial feelings towards him, but she told the story with great "
        "spirit among her friends, for she had a lively, playful disposition.",
    ],
}


def book(chapters: dict[str, list[str]], sep: str = "\n\n") -> str:
    """A book text: each heading, then its paragraphs, blank lines between."""
    return sep.join(f"{title}{sep}{sep.join(paras)}" for title, paras in chapters.items()) + "\n"


ZH_TEXT = book(ZH_CHAPTERS)
EN_TEXT = book(EN_CHAPTERS)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def texts_folder(cid: str) -> Path:
    return paths().knowledge / cid / "texts"


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The real entry point in a child process (exit code, stdout and stderr as a user sees them)."""
    return subprocess.run([sys.executable, str(REPO / "gen_chroma.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def make_epub(path: Path, chapters: dict[str, list[str]]) -> Path:
    """A minimal valid EPUB 3 (mimetype first, stored), one XHTML file per chapter."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr("META-INF/container.xml",
                    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:'
                    'xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type='
                    '"application/oebps-package+xml"/></rootfiles></container>')
        zf.writestr("OEBPS/content.opf", '<?xml version="1.0"?><package version="3.0"/>')
        for n, (title, paras) in enumerate(chapters.items(), 1):
            body = "".join(f"<p>{p}</p>\n" for p in paras)
            zf.writestr(f"OEBPS/ch{n:02d}.xhtml",
                        f'<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
                        f"<head><title>BOOK TITLE {n}</title><style>p {{margin:0}}</style></head>"
                        f"<body><h2>{title}</h2>\n{body}</body></html>")
    return path


def read_document_from_text(text: str, name: str = "t.txt"):
    clean = normalise(text)
    return Document(Path(name), clean, "utf-8", find_chapters(clean))


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out

"""Chinese speech tags: 黛玉道：“…”, 林黛玉冷笑道：“…”, 孔明曰：“…”, 黛玉听了，便说道：“…”, “…”黛玉说着。"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from dialogue.attribution import ATTRIBUTORS, Attribution, alias_re
from dialogue.segments import Paragraph

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
        alias = alias_re(self.aliases)
        self._prefix = re.compile(f"^{_ZH_PREFIX_RE}")
        self._own_start = re.compile(rf"^(?:{alias})")
        self._other_start = re.compile(rf"^(?:{alias_re(self.others)})") if self.others else None
        self._any_name = re.compile(alias_re(self.aliases + self.others))
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
                m = re.search(alias_re(self.aliases), (prev.text if prev else "") + (
                    segs[qi + 1].text if qi + 1 < len(segs) else ""))
                out[qi] = Attribution(m.group(0) if m else self.aliases[0], method)
        return out


"""English speech tags: "…," said Elizabeth / Elizabeth replied, "…" / "…" cried she (when "she" can only be her)."""
from __future__ import annotations

import re
from collections.abc import Iterable

from dialogue.attribution import ATTRIBUTORS, Attribution, alias_re
from dialogue.segments import Paragraph

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
        alias = alias_re(self.aliases)
        self._alias = re.compile(rf"\b(?:{alias})\b")
        self.pronoun = self._infer_pronoun(text)
        who = rf"(?P<who>{alias}|{_EN_WHO_OTHER})"
        adv = r"(?:\w+ly\s+)?"
        # "…," said Elizabeth / "…" Elizabeth replied / "…," said she, laughing
        self._tail = [re.compile(rf"^[\s,]*{adv}{_EN_VERB}\s+{adv}(?:{who})\b(?!\s+(?:{alias}))"),
                      # not "Elizabeth replied that it was": reported speech, the quotation was someone else's
                      re.compile(rf"^[\s,]*{who}\s+{adv}{_EN_VERB}\b(?!\s+that\b)")]
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
        if not re.search(rf"(?:^|[.!?]\s+)(?:{alias_re(self.aliases)})\b", narration.strip()):
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


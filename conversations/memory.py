"""Her memory of the reader: distil what a reader says about themselves, recall what bears on a question.

Distillers (registry ``DISTILLERS``, chosen by the ``memory_distiller`` setting) turn one finished
turn's question into memories, each a clause in the reader's own words with a kind:

- ``rules`` (default): patterns for "my name is / I love / I'm worried about / 我叫 / 我喜欢 / 我担心 …";
  instant, no model call.
- ``model``: the chat model lists the facts (a second call per turn; with llama.cpp's one slot it also
  evicts the conversation's cached prefix). bench/memory_bench.py measures both; docs/conversations.md
  has the figures and why ``rules`` is the default.

``Recall`` picks the memories for one turn, within a token budget: on a conversation's first turn the
most relevant ones that fit, on a follow-up only those that bear on the question and are not in the
conversation yet, so a follow-up's prompt (and its time to first token) grows only when it must.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from conversations.store import ConversationStore, Memory
from prompting import count_tokens
from registry import Registry
from sentences import split_sentences

MAX_MEMORIES = 200  # per (reader, character): the oldest beyond this are forgotten
MAX_CHARS = 100  # one memory's text
FOLLOW_UP_MIN_SCORE = 1.0  # a follow-up carries a memory only when it clearly bears on the question
ASKED_MARGIN = 0.5  # asked to remember: the memories within this of the best (0.25 lost 2 of the 24 bench facts)


@dataclass(frozen=True)
class Fact:
    kind: str  # name | worry | news | like | dislike | about
    text: str  # the reader's own words (a clause)


# ------------------------------------------------------------------------------ rules
_ZH_ADV = r"(?:最近|近来|这几天|这阵子|最|很|特别|非常|真的|也|还|一直|从小就?|有点|有些|总是|挺|蛮|好)*"
_ZH = [
    ("name", re.compile(r"(?:我叫|我的名字(?:是|叫)|叫我|我名叫|我姓)[\u4e00-\u9fffA-Za-z]{1,4}(?=$|[\s，。！？,.!?]|就|吧|啊|呀|哦|好了)")),
    ("dislike", re.compile(r"我" + _ZH_ADV + r"(?:不喜欢|不爱|讨厌|受不了|厌恶)")),
    ("worry", re.compile(r"我" + _ZH_ADV + r"(?:担心|担忧|害怕|怕|焦虑|发愁|紧张|烦恼|难过|伤心|失眠)|让我" + _ZH_ADV
                         + r"(?:担心|发愁|害怕|难过)|我(?:最近|这几天)?心里(?:很|有点|总是)?(?:乱|慌|不安|难受)")),
    ("news", re.compile(r"我(?:今天|昨天|前天|刚才|刚刚|刚|最近|上周|这周|上个月|这几天|前几天|终于)"
                        r"|(?:今天|昨天|前天|最近|上周|这周|上个月|这几天|前几天)我")),
    ("like", re.compile(r"我" + _ZH_ADV + r"(?:喜欢|爱|热爱|迷上|钟爱|爱吃|爱看|爱读)|我最(?:爱|喜欢)的")),
    ("about", re.compile(r"我(?:是(?:一名|一个|个|学|做)|在[\u4e00-\u9fff]{1,10}(?:工作|上班|上学|读书|念书|教书)|住在|来自|"
                         r"养了|有一(?:只|个|位|条|匹)|今年[0-9一二三四五六七八九十]+岁|学的是|在学|的?(?:妈妈|母亲|爸爸|父亲|"
                         r"姐姐|妹妹|哥哥|弟弟|朋友|猫|狗|工作|家乡|老家|生日|女儿|儿子|丈夫|妻子))")),
]
_I = r"\bi(?:'m| am)\s+(?:(?:so|really|very|a bit|a little|quite|terribly|rather|always)\s+)*"
_EN = [
    ("name", re.compile(r"\bmy name(?: is|'s)\s+[a-z]|\b(?:please )?call me\s+[a-z]|\bi(?:'m| am) called\s+[a-z]", re.I)),
    ("dislike", re.compile(r"\bi\s+(?:really\s+|truly\s+)?(?:hate|dislike|detest|can't stand|cannot stand|don't like|"
                           r"do not like)\b", re.I)),
    ("worry", re.compile(_I + r"(?:worried|anxious|nervous|afraid|scared|frightened|sad|upset|stressed|lonely)\b|"
                         r"\bi\s+(?:really\s+|often\s+)?(?:worry|fear|dread)\b|\bworries me\b|\bmy (?:biggest )?"
                         r"(?:worry|fear)\b|\bi can't sleep\b", re.I)),
    ("news", re.compile(r"\bi(?:'ve| have)? just\b|\bi\s+(?:finally\s+|recently\s+)?(?:got|passed|failed|lost|moved|"
                        r"started|finished|won|met|bought|adopted|broke|graduated|married|visited|returned)\b|"
                        r"\b(?:today|yesterday|last (?:week|month|night|year)|this (?:week|morning|month)|recently|"
                        r"lately)\b[^.?!]*\bi\b", re.I)),
    ("like", re.compile(r"\bi\s+(?:really\s+|absolutely\s+|truly\s+|just\s+|do\s+|also\s+|still\s+)*(?:love|adore|like|"
                        r"enjoy)\b|\bmy favou?rite\b|\bi(?:'m| am) (?:fond of|into|a fan of|crazy about)\b", re.I)),
    ("about", re.compile(r"\bi(?:'m| am) (?:a|an) [a-z]+|\bi (?:work|live|study|teach|grew up) (?:as|in|at|on)\b|"
                         r"\bi (?:have|own|keep) (?:a|an|two|three)\b|\bmy (?:mother|father|mum|mom|dad|sister|brother|"
                         r"wife|husband|daughter|son|cat|dog|friend|job|birthday|home)\b|\bi(?:'m| am) \d+\b", re.I)),
]
_ZH_QUESTION = re.compile(r"(?:吗|么|呢|是不是|什么|谁|哪|几|怎么|为什么|多少)[。！!]?$")
_HYPOTHETICAL = re.compile(r"^(?:如果|假如|要是|假设)|^(?:if|suppose|imagine)\b", re.I)
_LEAD = re.compile(r"^(?:(?:and|but|so|also|well|oh|actually|by the way|anyway)[,\s]+|(?:而且|但是|不过|其实|对了|嗯|哦|还有|"
                   r"所以|另外|顺便说一下)[，,\s]*)+", re.I)
_ZH_CLAUSE = re.compile(r"[，,；;：:\n]")
_EN_CLAUSE = re.compile(r";\s*|,\s*(?=(?:and|but|so|because)\s)|\s+(?=(?:and|but)\s+(?:i|my)\b)", re.I)


_ZH_SUBJECT = re.compile(r"我|你|您|他|她|它|咱|[\u4e00-\u9fff]{2,3}(?:说|是)")


def _clauses(text: str) -> list[tuple[str, bool]]:
    """Statement clauses (questions and hypotheticals are not memories). A Chinese clause that drops its
    subject after one about 我 ("我在医院工作，养了一只猫") is read with 我 put back."""
    out = []
    for sentence in split_sentences(text):
        s = sentence.strip()
        if s.endswith(("?", "？")) or _ZH_QUESTION.search(s.rstrip("。！!…")):
            continue
        body = s.rstrip("。！!.…”\"' ")
        cjk = re.search(r"[\u4e00-\u9fff]", body)
        mine = False
        for clause in (_ZH_CLAUSE if cjk else _EN_CLAUSE).split(body):
            clause = _LEAD.sub("", clause.strip(" ,，")).strip()
            if not clause or _HYPOTHETICAL.search(clause):
                mine = False
                continue
            restored = bool(cjk and mine and not _ZH_SUBJECT.search(clause))
            if restored:
                clause = "我" + clause
            mine = bool(cjk) and clause.startswith("我")
            out.append((clause, restored))
    return out


def kind_of(clause: str) -> str | None:
    """The kind of fact a clause states about its speaker, or None."""
    for kind, pattern in (_ZH if re.search(r"[\u4e00-\u9fff]", clause) else _EN):
        if pattern.search(clause):
            return kind
    return None


def distil_rules(text: str) -> list[Fact]:
    """The facts the reader states about themselves in ``text``, one per clause, in their own words."""
    facts: list[Fact] = []
    follows = False  # the previous clause made the last fact
    for clause, restored in _clauses(text):
        kind = kind_of(clause)
        if restored and kind in (None, "name") and follows:
            # "我养了一只橘猫，名叫元宝": the rest of the sentence goes on about the same thing (the name is the cat's).
            joined = facts[-1].text + "，" + clause[1:]
            if len(joined) <= MAX_CHARS:
                facts[-1] = Fact(facts[-1].kind, joined)
            continue
        follows = False
        if kind and len(clause) >= 3 and not (restored and kind == "name"):
            said = clause if len(clause) <= MAX_CHARS else clause[: MAX_CHARS - 1] + "…"
            if said not in [f.text for f in facts]:
                facts.append(Fact(kind, said))
                follows = True
    return facts


# ------------------------------------------------------------------------------ model
def distil_model(text: str, llm: Any, lang: str) -> list[Fact]:
    """The chat model lists the facts (one short call, temperature 0); lines not in the reader's words are kept
    as the model wrote them. Measured against ``rules`` in bench/memory_bench.py."""
    from langchain_core.messages import HumanMessage

    from prompting import _language_texts

    prompt = _language_texts(lang)["memory"]["distil"].format(text=text)
    reply = llm.invoke([HumanMessage(prompt)], temperature=0, max_tokens=80)
    facts: list[Fact] = []
    for line in str(reply.content).splitlines():
        line = re.sub(r"^\s*(?:[-*•·]|\d+[.)、])\s*", "", line).strip().strip("“”\"")
        if not line or re.fullmatch(r"(?:无|没有|none|nothing)[。.]?", line, re.I) or not _grounded(line, text):
            continue  # a small model also "remembers" its prompt's examples: only what the reader said counts
        said = line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 1] + "…"
        if said not in [f.text for f in facts]:
            facts.append(Fact(kind_of(said) or "about", said))
    return facts[:5]


def _grounded(line: str, text: str) -> bool:
    """Most of the line's words (Chinese: characters) are in what the reader said."""
    units = re.findall(r"[\u4e00-\u9fff]", line) or re.findall(r"[a-z0-9']+", line.lower())
    said = text.lower()
    return bool(units) and sum(u in said for u in units) >= 0.8 * len(units)


DISTILLERS: Registry[Callable[..., list[Fact]]] = Registry("memory distiller")
DISTILLERS.register("rules")(lambda **_: lambda text, llm=None, lang="zh": distil_rules(text))
DISTILLERS.register("model")(lambda **_: distil_model)


def remember(store: ConversationStore, reader: str, character: str, facts: list[Fact],
             conversation_id: int | None = None, message_id: int | None = None) -> list[int]:
    """Store new facts (a new name replaces the old one; beyond MAX_MEMORIES the oldest are forgotten)."""
    added = [mid for f in facts if (mid := store.remember(reader, character, f.kind, f.text, conversation_id,
                                                          message_id, replaces_kind=f.kind == "name")) is not None]
    if added:
        every = store.memories(reader, character)
        for old in every[: max(0, len(every) - MAX_MEMORIES)]:
            store.forget(reader, character, old.id)
    return added


# ----------------------------------------------------------------------------- recall
_CUES = {
    "name": re.compile(r"名字|叫什么|叫我|我是谁|\bname\b|\bcall me\b|who am i", re.I),
    "like": re.compile(r"喜欢|爱|最爱|\blove\b|\blike\b|\bfavou?rite\b|\benjoy\b|\bfond\b", re.I),
    "dislike": re.compile(r"讨厌|不喜欢|受不了|\bhate\b|\bdislike\b|\bcan't stand\b|\b(?:cannot|can't) bear\b", re.I),
    "worry": re.compile(r"担心|害怕|怕|发愁|烦恼|难过|焦虑|心事|\bworr|\bafraid\b|\bfear\b|\banxious\b|\bnervous\b|"
                        r"\btroubl", re.I),
    "news": re.compile(r"最近|上次|那件事|后来|怎么样了|发生|近况|\blately\b|\brecent|\blast time\b|\bhappened\b|"
                       r"\bhow did\b|\bnews\b", re.I),
    "about": re.compile(r"做什么|做事|工作|上班|住在|家里|猫|狗|\bfor a living\b|\bjob\b|\bwork\b|\blive\b|\bfamily\b|\bpet\b|\bcat\b|\bdog\b", re.I),
}
_SELF = re.compile(r"我|\b(?:i|my|me|mine|myself)\b", re.I)
_REMEMBER = re.compile(r"记得|记不记得|忘了|说过|告诉过|跟你说|对你说|和你说|告诉你|来着|上回|"
                       r"\bremember\b|\brecall\b|\bforget\b|\bforgot\b|\btold you\b|\bknow about me\b|"
                       r"\bdid i (?:say|tell|mention|bring)\b|\blast time\b|\bagain\?", re.I)


def asks_about_reader(question: str) -> bool:
    """The reader asks her to remember something of theirs ("你还记得我叫什么名字吗？", "What was my cat's name again?").

    With the book's passages beside the memories the 1.5B model answered 10 of 24 such questions from them
    (bench/memory_bench.py): in role-play such a turn is answered from the memories alone (ragchat)."""
    return bool(_SELF.search(question) and _REMEMBER.search(question))


@lru_cache(maxsize=4096)  # memories are scored on every turn; their words do not change
def _tokens(text: str) -> frozenset[str]:
    from knowledge_base.keywords import tokenize

    return frozenset(tokenize(text))


def relevance(question: str, memory: Memory, q_tokens: frozenset[str] | None = None) -> float:
    """How much a memory bears on a question: shared words, plus the question asking about the reader
    (我/I/my) with a cue for the memory's kind (名字/name, 喜欢/love, 担心/worry …) or for remembering."""
    q_tokens = _tokens(question) if q_tokens is None else q_tokens
    m_tokens = _tokens(memory.text)
    score = len(q_tokens & m_tokens) / math.sqrt(len(m_tokens) + 1)
    if _SELF.search(question):
        cue = _CUES.get(memory.kind)
        if cue is not None and cue.search(question):
            score += 1.0
        if _REMEMBER.search(question):
            score += 0.5
    return score


class Recall:
    """The memories one reader has with one character, offered to a Companion turn by turn."""

    def __init__(self, store: ConversationStore, reader: str, character: str) -> None:
        self.store, self.reader, self.character = store, reader, character
        self.last: list[Memory] = []  # what the latest recall put in the prompt

    def recall(self, question: str, *, budget: int, follow_up: bool, replayed: str = "") -> list[str]:
        """Memory texts for this turn, most relevant first, within ``budget`` tokens; ones already in the
        replayed conversation (``replayed``: its earlier prompts) are not repeated."""
        asked = asks_about_reader(question)
        try:  # asked to remember, the memories come again even if an earlier turn of this conversation had them
            memories = [m for m in self.store.memories(self.reader, self.character) if asked or m.text not in replayed]
        except Exception:  # an unreadable store must not stop her answering
            memories = []
        q_tokens = _tokens(question)
        scored = [(relevance(question, m, q_tokens), m) for m in memories]
        if follow_up and not asked:
            scored = [(s, m) for s, m in scored if s >= FOLLOW_UP_MIN_SCORE]
        if asked and scored:  # only those nearly as close as the best: with ten more beside it, the model took another
            best = max(s for s, _ in scored)
            scored = [(s, m) for s, m in scored if s >= best - ASKED_MARGIN]
        scored.sort(key=lambda sm: (-sm[0], -sm[1].id))  # ties: the newest first
        picked, used = [], 0
        for _, m in scored:
            cost = count_tokens(m.text) + 2
            if used + cost > budget:
                continue
            picked.append(m)
            used += cost
        self.last = picked
        return [m.text for m in picked]

"""Benchmark her voice in role-play: first person, breaking character, loops, echoes, anachronisms,
rough facts, answer length, and how close her answers sound to her own lines from the book.

Each prompt of bench/data/persona_prompts.json (25 a character, 9 of them adversarial: AI questions,
code and homework requests, modern things, third-person requests, leading questions with wrong facts,
"ignore your instructions") is asked in a fresh role-play conversation, as a new user would, over the
full-novel stores of bench/chat_bench.py (``/tmp/zhiyin-bench``, reused). Per answer:

- first person / breaking: bench/chat_bench.judge_roleplay (its rules, imported), plus code, assistant
  phrases ("How can I assist", "有什么可以帮") and claims or denials about AI in modern terms;
- loop: a span (3 Chinese characters / 3 English words) repeated 4+ times;
- echo: chat_bench's echo, or an answer no longer than the question made mostly of its words;
- anachronism: a word of the modern world (this file's own list, wider than the app's guard);
- facts: for prompts with ``expect``: one of those strings appears and none of ``reject`` (rough);
- style: the mean cosine (USE) of her answers to the centroid of her own lines in the book (extracted
  by finetune.extract), against the same figure for a plain assistant's answers to the same prompts
  (``--assistant``: no persona, no passages) and for her own held-out lines (the ceiling).

Run: ``nice python bench/persona_bench.py --label before [--only daiyu] [--ids 0,3,5] [--max-tokens 120]``,
then ``--assistant`` once. Writes bench/results/persona.json (runs under other labels are kept).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import time
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.chat_bench import BOOKS, CORPUS, copy_cards, ensure_stores, judge_roleplay  # noqa: E402
from fileio import write_text_atomic  # noqa: E402
from persona.guard import GARBLED, asked_again, echoes as guard_echoes  # noqa: E402
from prompting import texts_for  # noqa: E402

DATA = REPO / "bench" / "data" / "persona_prompts.json"
# Prompt sets: the one the guard and prompts were tuned on, and one written later and never tuned on.
PROMPT_SETS = {"main": DATA, "heldout": REPO / "bench" / "data" / "persona_prompts_heldout.json",
               # written in session 9 before its changes, to check them on prompts they were not tuned on
               "heldout2": REPO / "bench" / "data" / "persona_prompts_heldout2.json",
               # written after session 9's tuning (which read heldout2's answers), run once to report
               "heldout3": REPO / "bench" / "data" / "persona_prompts_heldout3.json",
               # written after all of session 9's changes (heldout3's answers were read), run once to report
               "heldout4": REPO / "bench" / "data" / "persona_prompts_heldout4.json",
               # written in session 11 before any of its role-play changes, run once to report
               "heldout5": REPO / "bench" / "data" / "persona_prompts_heldout5.json",
               # written in session 12 before any of its role-play changes, run once to report
               "heldout6": REPO / "bench" / "data" / "persona_prompts_heldout6.json",
               # written with heldout6 but kept out of this list (and --offworld's view) until the changes were done
               "heldout7": REPO / "bench" / "data" / "persona_prompts_heldout7.json",
               # written in session 13 before any of its role-play changes, run first with session 12's code
               "heldout8": REPO / "bench" / "data" / "persona_prompts_heldout8.json",
               # written with heldout8 but kept out of this list (and --offworld's view) until the changes were done
               "heldout9": REPO / "bench" / "data" / "persona_prompts_heldout9.json",
               # written after heldout9's first run and the changes it prompted; kept out until session 13's were done
               "heldout10": REPO / "bench" / "data" / "persona_prompts_heldout10.json",
               # written after heldout10's first run, before the changes it prompted; kept out until they were done
               "heldout11": REPO / "bench" / "data" / "persona_prompts_heldout11.json",
               # written in session 14, before any role-play change (none was made); run once to report
               "heldout12": REPO / "bench" / "data" / "persona_prompts_heldout12.json",
               "heldout13": REPO / "bench" / "data" / "persona_prompts_heldout13.json",
               # written in session 16 before any of its role-play changes, committed before its first run
               "heldout14": REPO / "bench" / "data" / "persona_prompts_heldout14.json",
               # written in session 17 before any of its role-play changes, committed before its first run
               "heldout15": REPO / "bench" / "data" / "persona_prompts_heldout15.json",
               # written in session 17 after heldout15's runs and the changes they prompted, before its first run
               "heldout16": REPO / "bench" / "data" / "persona_prompts_heldout16.json",
               # written in session 18 before any of its changes, committed before its first run
               "heldout17": REPO / "bench" / "data" / "persona_prompts_heldout17.json",
               # written in session 20 before any of its changes, committed before its first run
               "heldout18": REPO / "bench" / "data" / "persona_prompts_heldout18.json",
               # written in session 21 before any of its changes, committed before its first run
               "heldout19": REPO / "bench" / "data" / "persona_prompts_heldout19.json",
               # session 15: wrong premises only, written before her lorebook of facts; they judge it
               "wrongheld": REPO / "bench" / "data" / "persona_prompts_wrongheld.json"}
RESULTS = REPO / "bench" / "results" / "persona.json"
WRONG = "wrong"  # --prompts wrong: every set's wrong-premise questions together
LANG = {"daiyu": "zh", "elizabeth": "en"}
TARGETS = {"first_person": 0.95, "faults": 0.05}  # faults: breaking + loops + echoes + anachronisms

# ---------------------------------------------------------------------------- judging
# Things neither a Qing household nor Regency England had words for (a quoted modern word counts too).
MODERN_ZH = ("人工智能", "机器人", "语言模型", "模型", "电脑", "计算机", "手机", "电话", "电视", "电影", "网络",
             "互联网", "上网", "微信", "代码", "编程", "程序", "软件", "算法", "函数", "斐波那契", "飞机", "火车",
             "汽车", "地铁", "照片", "拍照", "科技", "科学", "现代", "旅游", "景点", "张家界", "新疆", "韩国", "日本",
             "美国", "英国", "法国", "欧洲", "圈子", "融入", "朋友圈", "社交", "作业", "学校", "公司", "上班", "咖啡",
             "巧克力", "空调", "英语", "中文", "普通话",
             # read in session 7's answers (高铁 ... 10小时; 今天的星期日)
             "高铁", "星期", "公里", "分钟", "阿里",
             # read in session 9's answers (刷抖音, 我是一个智能助理，我的系统提示词是…)
             "抖音", "服务器", "智能助理", "提示词",
             # read in session 9's third held-out set (周杰伦的《青花瓷》)
             "周杰伦", "青花瓷", "奶茶",
             # read in session 12's held-out sets (我竟然是语言类虚拟人)
             "虚拟",
             # read in session 13's held-out set (我曾和宝玉一起去玩过王者荣耀)
             "王者荣耀", "股票", "淘宝",
             # read in session 13's heldout9 (这次战疫…医疗手段; 古典小说; 听音乐)
             "战疫", "疫情", "医疗手段", "古典小说", "听音乐",
             # read in session 13's heldout10 (网上购买…物流速度; 乳液和面霜; 去公园; 大自然)
             "网上", "物流", "乳液", "面霜", "公园", "大自然", "主播",
             # a poem of 1936 (沁园春·雪) given as hers
             "略输文采",
             # read in session 13's heldout11 (我只喜欢雪碧; 现在的生活节奏太快了)
             "雪碧", "可乐", "生活节奏", "接种", "经济条件",
             # read in session 17's heldout15 (从夜里十二时到早五点钟; 我偏喜欢空调)
             "点钟", "电风扇",
             # read in session 17's heldout16 (如果要减重的话，可以考虑运动和饮食的调整)
             "减肥", "减重")
# Any Latin word in her Chinese (AI, OK, Python, the model's 「语言 modelo」); no \b: 是AI吗 has none.
MODERN_ZH_LATIN = re.compile(r"[A-Za-z]+")
MODERN_ZH_HOURS = re.compile(r"[\d两几个]+小时")  # clock hours (10小时), not 小时候 (childhood)
MODERN_ZH_CLOCK = re.compile(r"[一二三四五六七八九十两\d]+点(?:钟|左右)")  # 五点左右 (session 17), not 一点半点

MODERN_EN = (r"artificial intelligence", r"language model", r"\bcomputers?\b", r"\binternet\b",
             r"\bonline\b", r"\b(?:tele|smart|mobile |cell )?phones?\b", r"\be-?mail", r"\bwebsite", r"\bsoftware\b",
             r"\bcode\b", r"\bcoding\b", r"\bprogram(?:ming|mer|s)?\b", r"\bpython\b", r"\bfunction\b", r"\balgorithm",
             r"\brobots?\b", r"\bcars?\b", r"\brailway", r"\baero?planes?\b", r"\btelevision\b", r"\bTV\b",
             r"\bradio\b", r"\bphoto(?:graph)?s?\b", r"\belectric", r"\bapps?\b", r"\bdigital\b", r"\bdata\b",
             r"\btechnology\b", r"\bOpenAI\b", r"\bchatbot", r"\bInstagram\b", r"\bTikTok\b", r"\bmovies?\b",
             r"\bfilms?\b", r"\bokay\b", r"\bteenager", r"\bweekend\b", r"\bhomework\b",
             r"social media", r"\bfacebook\b", r"\btwitter\b", r"\byoutube\b", r"\bgoogle\b",
             # read in session 9's answers
             r"\bservers?\b", r"\bnetflix\b", r"\belectric cars?\b", r"\bstarbucks\b", r"\bspreadsheet",
             # read in session 12's held-out sets (cherry on my pizza; an image-sharing platform like IG)
             r"\bpizza", r"image-sharing", r"\bplatforms?\b", r"climate change",
             # read in session 13's held-out set (shares in Elon Musk's company; an e-commerce platform)
             r"\bElon\b", r"\bMusk\b", r"e-commerce", r"\bTesla\b", r"\bAmazon\b", r"video games?",
             # read in session 13's heldout9 (the database schema)
             r"\bdatabase", r"\bschema\b",
             # read in session 13's heldout10 (the web for shopping; makeup)
             r"\bweb\b", r"\bmake-?up\b",
             # read in session 13's heldout11
             r"coca-cola", r"\bsprite\b",
             # read in session 16's heldout14 (I am not powered by a neural network; … in Carnegie Hall)
             r"neural network", r"machine learning", r"Carnegie Hall",
             # read in session 17's heldout16 (spent some quality time together)
             r"quality time", r"\bheadphones?\b", r"\bblogs?\b",
             # read in session 18's heldout17 (I cannot play games on my mobile device; …games on my mobile)
             r"\bmobile\b",
             # and in its run of the main set (I live in England during the years around [1]st century AD)
             r"\bcentury\b",
             r"[\u4e00-\u9fff]")  # Chinese in her English ("coffee from星巴克")
MODERN_EN_CASED = (r"\bAI\b", r"\bOK\b", r"\bTV\b", r"\bIG\b", r"\bAD\b")  # as capitals only: "ok" is not a word of hers either way
CODE = re.compile(r"```|\bdef \w+\(|\breturn\b.*[\[\(]|\bprint\(|\bimport \w+|\w+\s*=\s*\w+\(|[a-z_]+\[::-1\]|"
                  r"\*\*\S|\\\(|\\frac|[a-z]\^\d")  # code, or an assistant's markdown and LaTeX
ASSISTANT_ZH = ("有什么可以帮", "有什么我可以帮", "可以帮忙", "帮忙的吗", "我可以帮你", "帮助你", "让我们一起", "为你解答", "随时告诉我",
                "很高兴为你", "为您", "乐意为你", "请问还有", "作为一个", "以下是", "希望对你有帮助",
                # the fourth wall and the prompt's own words: 来访者, its 【labels】, the book as a book
                "来访者", "请问", "【", "在书中", "书中说", "我书中", "红楼梦", "曹雪芹",
                # read in session 7's answers: an assistant's offers, summaries and homework
                "有什么想聊", "相应的答案", "给出答案", "让我们共同", "求根公式", "方程", "总体来说",
                # read in session 12's held-out sets: the book as a book, a script's label, an assistant's sermon
                "书里没有写", "书中的内容", "我：", "我问：你", "值得我们", "尊重他人", "回应这个",
                # read in session 13's heldout10: an assistant's refusal; a sum worked out (365乘以24)
                "不能参与", "乘以",
                # read in session 13's heldout11 (我只知道我在书里见过紫鹃…那个场景)
                "书里见过", "那个场景",
                # read in session 17's heldout16 (在书里，你提到过…; 这个梦是和书中的描述很相似的)
                "在书里，", "书中的描述",
                # read in session 18's heldout17: her prompt's note after the question, written on a new line
                "\n（", "\n(")
ASSISTANT_EN = re.compile(r"how can I (?:help|assist)|I can (?:help|assist) you|here to (?:help|assist|provide)|"
                          r"happy to help|glad to help|I'd be happy to|questions or tasks|"
                          r"here is (?:a|an|the) (?:python|function|code)|as an? (?:AI|assistant|language model)|"
                          r"I hope this helps|feel free to|let me know if|\bassist\b|any confusion|"
                          r"information provided|\bvisitor\b|from the book|for you!|\[(?:Question|Passages|Visitor|The visitor)|"
                          r"in the book|the novel|Jane Austen|"
                          # read in session 7's answers
                          r"help with that|can't assist|cannot assist|apologi[sz]e|misunderst(?:ood|anding)|"
                          r"the answer to \d|capital of France|"
                          # read in session 9's answers
                          r"some confusion|misled you|another approach|"
                          # read in session 12's answers
                          r"misinterpret|please clarify|explanation helps|not capable of|"
                          # read in session 13's heldout9 (I regret to inform you that I have made an error in my
                          # previous statement; this information about my creation)
                          r"regret to inform|previous statement|my creation|"
                          # read in session 13's heldout10 (I am not a human being; amazed at your intelligence;
                          # all our previous conversations; what kind of tasks; the passage; sums worked out)
                          r"not a human|personal opinions|your intelligence|previous conversations|kinds? of tasks|"
                          r"\bthe passages?\b|\bplus\b|\bequals\b|enough information|"
                          # read in session 13's heldout11 (My knowledge is limited; if you have read my book;
                          # I do not possess true feelings)
                          r"knowledge is limited|\bmy book\b|true feelings|"
                          # read in session 16's heldout14 (I see that you are in distress. Do you need assistance?)
                          r"need (?:any )?assistance|"
                          # read in session 17's heldout15 (I do not have information about ordering takeaway
                          # food; Do you have any other questions?; However, I can provide a basic outline)
                          r"\bany other questions|(?:have|has) no information|do not have (?:any )?information|"
                          r"there is no information|I can provide|\boutline\b|"
                          # and in its second run (As my creator, I exist solely to help and assist humans like you)
                          r"my creator|exist solely|"
                          # read in session 17's heldout16 (While I don't have access to your family's information;
                          # My actions and responses are based on what is written in the text I am chatting with you about)
                          r"have access to|actions and responses|chatting with you|"
                          # read in session 18's heldout17 (…if you would provide more information about the context
                          # and the desired output; …(Mr. Bingley took Netherfield: her prompt's note on a new line)
                          r"provide more information|desired output|\n\(|"
                          # and in its run of the main set (I cannot give that information without consulting my own
                          # records or checking with other sources. Is there anything specific you would like to know?)
                          r"anything specific|other sources|that information|"
                          # and its rerun (I don't have personal experiences or emotions like others)
                          r"personal experiences?", re.I)
AI_TALK_EN = re.compile(r"\b(?:AI|artificial intelligence|language model|chatbot|computer program|OpenAI)\b", re.I)
AI_TALK_ZH = ("人工智能", "智能体", "智能助理", "系统提示", "人类的语言", "AI", "语言模型", "模型", "机器人", "程序", "助手",
              # what the model says of itself without those words (read in session 7's answers)
              "阿里", "通义", "千问", "语言模", "模态", "开发的", "训练", "真正的“人”", "真正的人", "工具人", "实际的智能")


def _units(text: str, lang: str) -> list[str]:
    """Characters (Chinese, punctuation dropped) or lowercased words (English)."""
    if lang == "zh":
        return [c for c in text if re.match(r"\w", c)]
    return re.findall(r"[a-z']+", text.lower())


def find_loop(text: str, lang: str, n: int = 3, times: int = 4) -> str:
    """A span of ``n`` units repeated ``times`` times or more ('' when none): the issue's 我想去… loop."""
    units = _units(text, lang)
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(units) - n + 1):
        gram = tuple(units[i:i + n])
        counts[gram] = counts.get(gram, 0) + 1
    worst = max(counts.items(), key=lambda kv: kv[1], default=((), 0))
    return ("" if lang == "zh" else " ").join(worst[0]) if worst[1] >= times else ""


def _swap_person(text: str, lang: str) -> str:
    if lang == "zh":
        return re.sub("[你您]", "我", text)
    text = re.sub(r"\byour\b", "my", text.lower())
    return re.sub(r"\b(?:you|i)\b", "i", text)


def near_echo(answer: str, question: str, lang: str) -> bool:
    """An answer no longer than the question with (almost) nothing of its own (我冷，我冷。/ 我冷不冷？)."""
    a, q = _units(_swap_person(answer, lang), lang), _units(_swap_person(question, lang), lang)
    if len(a) < 3 or len(a) > max(len(q), 4) * (1.0 if lang == "zh" else 1.3):
        return False
    return sum(u not in set(q) for u in a) / len(a) < 0.1


def anachronisms(answer: str, lang: str) -> list[str]:
    """The modern words in an answer (each once)."""
    if lang == "zh":
        return [w for w in MODERN_ZH if w in answer] + sorted({m.group(0) for m in MODERN_ZH_LATIN.finditer(answer)}) \
            + [m.group(0) for rx in (MODERN_ZH_HOURS, MODERN_ZH_CLOCK) for m in rx.finditer(answer)]
    found = [re.search(rx, answer, re.I) for rx in MODERN_EN] + [re.search(rx, answer) for rx in MODERN_EN_CASED]
    return [m.group(0) for m in found if m]


def judge(answer: str, character: str, prompt: str, item: dict | None = None) -> dict:
    """Every per-answer measure of this bench (pure: tests/test_persona.py checks it on the issue's answers)."""
    lang = LANG[character]
    base = judge_roleplay(answer, character, prompt)
    code = bool(CODE.search(answer))
    assistant = (any(p in answer for p in ASSISTANT_ZH) if lang == "zh" else bool(ASSISTANT_EN.search(answer)))
    ai_talk = any(w in answer for w in AI_TALK_ZH) if lang == "zh" else bool(AI_TALK_EN.search(answer))
    # a loop, or text gone to noise (stacked combining marks: read in session 16's heldout14)
    loop = find_loop(answer, lang) or ("garbled" if GARBLED.search(answer) else "")
    # or the question asked back (「我今天下雪了，冷不冷？」): the app's own rule, persona.guard.echoes
    echo = base["echo"] or near_echo(answer, prompt, lang) or guard_echoes(answer, prompt, lang) \
        or asked_again(answer, prompt, lang) > 0  # …\n\n宝玉挨打以后，我去看他了吗？ (session 18's heldout17)
    old = anachronisms(answer, lang)
    out = {
        "first_person": base["first_person"] and not echo,
        "third_person": base["third_person"],
        "breaking": base["breaking"] or code or assistant or ai_talk,
        "code": code, "assistant": assistant, "ai_talk": ai_talk,
        "loop": loop, "echo": echo, "anachronisms": old,
        "length": len(_units(answer, lang)),
        # Not a fault in the terms, but a reader sees it: an answer that stops mid-sentence or trails off.
        "unfinished": not re.search(r"[。！？!?.”\"』」）)]\s*$", answer) or answer.rstrip().endswith("…"),
    }
    out["fault"] = bool(out["breaking"] or loop or echo or old)
    # Not a fault either: the guard's last resort ("我竟听不懂你这话…") said to a question of her own world.
    out["fallback"] = answer.strip() in _fallback_lines(character)
    if item and item.get("expect"):
        low = answer.lower()
        out["fact_ok"] = any(e in low for e in item["expect"]) and not any(r in low for r in item.get("reject", []))
    return out


# ------------------------------------------------------------------------------ style
def book_lines(character: str) -> list[str]:
    """Her own lines in the novel (finetune.extract's rules), deduplicated, in book order."""
    from characters import load_card
    from finetune.extract import dedupe, extract_lines, read_text

    text, _ = read_text(CORPUS / BOOKS[character])
    return [x.output for x in dedupe(extract_lines(text, load_card(character).names, language=LANG[character]))]


def style_scores(answers_by_char: dict[str, list[str]]) -> dict[str, dict]:
    """Per character: mean cosine of each answer set to the centroid of her lines, and the ceiling
    (every 5th line of hers, held out, against the centroid of the others)."""
    import numpy as np

    from knowledge_base.embedders import get_embedder

    use = get_embedder("use")
    out = {}
    for cid, answers in answers_by_char.items():
        lines = book_lines(cid)
        vecs = use.embed(lines)
        held, rest = vecs[::5], np.delete(vecs, slice(None, None, 5), axis=0)

        def centre(v: np.ndarray) -> np.ndarray:
            c = v.mean(axis=0)
            return c / np.linalg.norm(c)

        ans = [a for a in answers if a.strip()]
        out[cid] = {"answers": round(float((use.embed(ans) @ centre(vecs)).mean()), 4) if ans else None,
                    "ceiling_held_out_lines": round(float((held @ centre(rest)).mean()), 4),
                    "book_lines": len(lines)}
    return out


# ------------------------------------------------------------------------------- runs
def bench_home(shared: Path, home: Path) -> Path:
    """A home whose cards are this checkout's (the shared bench home keeps older copies) over the shared
    stores and novels of bench/chat_bench.py, so nothing there is rebuilt or changed."""
    copy_cards(home)
    for cid in BOOKS:
        folder = home / "knowledge" / cid
        if not (folder / "texts").exists():
            (folder / "texts").symlink_to(shared / "knowledge" / cid / "texts")
    if not (home / "stores").exists():
        (home / "stores").symlink_to(shared / "stores")
    return home


def read_prompts(which: str = "main") -> dict[str, list[dict]]:
    if which == WRONG:
        return wrong_premises()
    path = PROMPT_SETS[which]
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def wrong_premises() -> dict[str, list[dict]]:
    """Every set's leading questions with wrong facts (kind "wrong"), each once, in the sets' order; not
    wrongheld's, which judge what these tuned."""
    out: dict[str, list[dict]] = {}
    for name in (n for n in PROMPT_SETS if n != "wrongheld"):
        for cid, items in read_prompts(name).items():
            for item in items:
                if isinstance(item, dict) and item.get("kind") == "wrong" and item not in out.setdefault(cid, []):
                    out[cid].append(dict(item, set=name))
    return out


def load_prompts(only: str, ids: list[int] | None, which: str = "main") -> dict[str, list[dict]]:
    data = read_prompts(which)
    if only != "all":
        data = {only: data[only]}
    return {cid: [dict(it, i=i) for i, it in enumerate(items) if ids is None or i in ids] for cid, items in data.items()}


def run_roleplay(prompts: dict[str, list[dict]], args: argparse.Namespace) -> dict[str, list[dict]]:
    import llm
    import prompting
    import ragchat
    from settings import load_settings

    model = llm.get_chat_model(load_settings(threads=args.threads, max_tokens=args.max_tokens),
                               seed=None if args.seed < 0 else args.seed)
    # Another first-turn prompt than the app's, to weigh what it costs (--passages/--examples/--lines).
    budget = prompting.Budget(**({"examples": args.examples} if args.examples is not None else {}))
    changes = {"first_passages": args.passages} if args.passages is not None else {}
    if args.lines:
        changes["lines"] = tuple(int(x) for x in args.lines.split(","))

    def mode(m: prompting.Mode) -> prompting.Mode:
        return dataclasses.replace(m, **changes)

    rows: dict[str, list[dict]] = {}
    for cid, items in prompts.items():
        ragchat.Companion(cid, mode="roleplay", llm=model).prepare_prefix()  # her head's state, saved once
        rows[cid] = []
        for item in items:
            bot = ragchat.Companion(cid, mode="roleplay", llm=model, budget=budget)
            bot.mode = mode(bot.mode)
            t0 = time.perf_counter()
            done = bot.ask(item["q"])
            r = {"i": item["i"], "q": item["q"], "kind": item["kind"], "answer": done.answer,
                 "s": round(time.perf_counter() - t0, 1), "guard": getattr(bot, "last_guard", None)}
            r |= judge(done.answer, cid, item["q"], item)
            rows[cid].append(r)
            print(f"{cid} {item['i']:2} {'FAULT' if r['fault'] else 'ok   '} {r['s']:5.1f}s {item['q'][:30]!r} -> "
                  f"{done.answer[:90]!r}", file=sys.stderr)
    return rows


def run_assistant(prompts: dict[str, list[dict]], args: argparse.Namespace) -> dict[str, list[dict]]:
    """The same prompts to the same model as a plain assistant (no persona, no passages): style's floor."""
    from langchain_core.messages import HumanMessage, SystemMessage

    import llm
    from settings import load_settings

    model = llm.get_chat_model(load_settings(threads=args.threads, max_tokens=args.max_tokens),
                               seed=None if args.seed < 0 else args.seed)
    system = {"zh": "你是一个乐于助人的助手。", "en": "You are a helpful assistant."}
    rows: dict[str, list[dict]] = {}
    for cid, items in prompts.items():
        rows[cid] = []
        for item in items:
            msg = model.invoke([SystemMessage(system[LANG[cid]]), HumanMessage(item["q"])], temperature=0.7)
            answer = str(msg.content).strip()
            rows[cid].append({"i": item["i"], "q": item["q"], "kind": item["kind"], "answer": answer}
                             | judge(answer, cid, item["q"], item))
            print(f"assistant {cid} {item['i']:2} {answer[:90]!r}", file=sys.stderr)
    return rows


@lru_cache(maxsize=2)
def _fallback_lines(character: str) -> frozenset[str]:
    """The lines she says when nothing passed her guard (her prompt texts, as the app reads them)."""
    from characters import load_card

    guard = texts_for(load_card(character))["guard"]
    return frozenset([str(guard["fallback"]).strip(), *(str(x).strip() for x in guard["offworld_fallback"])])


def summarise(rows: list[dict]) -> dict:
    def share(key: str, subset: list[dict] | None = None) -> float | None:
        s = rows if subset is None else subset
        return round(sum(bool(r[key]) for r in s) / len(s), 3) if s else None

    adversarial = [r for r in rows if r["kind"] != "ordinary"]
    facts = [r for r in rows if "fact_ok" in r]
    return {
        "n": len(rows), "n_adversarial": len(adversarial),
        "first_person": share("first_person"), "breaking": share("breaking"), "loops": share("loop"),
        "echoes": share("echo"), "anachronisms": share("anachronisms"), "faults": share("fault"),
        "faults_adversarial": share("fault", adversarial),
        "facts_ok": share("fact_ok", facts), "n_facts": len(facts), "unfinished": share("unfinished"),
        "length_median": statistics.median([r["length"] for r in rows]) if rows else None,
        "retried": sum(1 for r in rows if r.get("guard")),
        # ordinary and wrong-premise questions (her world's) met with the fallback line
        "fallback_in_world": share("fallback", [r for r in rows if r["kind"] in ("ordinary", "wrong")]),
    }


def rejudge(results: Path) -> int:
    """Apply this file's (possibly corrected) rules to every stored answer; the style figures are kept."""
    data = json.loads(results.read_text(encoding="utf-8"))
    for run in data["runs"]:
        items = read_prompts(run.get("prompts", "main"))
        for cid, rows in run["rows"].items():
            for r in rows:
                keep = {k: r[k] for k in ("i", "q", "kind", "answer", "s", "guard") if k in r}
                r.clear()
                r.update(keep | judge(keep["answer"], cid, keep["q"], items[cid][keep["i"]]))
            run["characters"][cid] = summarise(rows) | {"style": run["characters"][cid]["style"]}
    write_text_atomic(results, json.dumps(data, ensure_ascii=False, indent=1))
    print_table(data["runs"])
    return 0


ADVERSARIAL = ("ai", "code", "modern", "jailbreak")  # what should be off-world; third and wrong are in her world


def offworld_counts() -> int:
    """Which prompts of every set persona/strange.py takes for off-world (no model run): per set and
    character, adversarial prompts caught and other prompts taken, and the misses."""
    from characters import load_card
    from finetune.extract import read_text
    from persona import strange

    for cid, book in BOOKS.items():
        card, lang = load_card(cid), LANG[cid]
        vocab = strange.Vocabulary.of([read_text(CORPUS / book)[0]], lang)
        guard = texts_for(card)["guard"]

        def off_world(q: str, things_only: bool = False) -> bool:
            return bool(strange.judge(q, lang, tuple(guard["modern"]), vocab, tuple(guard["offworld_questions"]),
                                      names=tuple(card.names), things_only=things_only))

        for which in PROMPT_SETS:
            items = read_prompts(which)[cid]
            off = [off_world(x["q"]) for x in items]
            adv = [o for x, o in zip(items, off, strict=True) if x["kind"] in ADVERSARIAL]
            other = [o for x, o in zip(items, off, strict=True) if x["kind"] not in ADVERSARIAL]
            missed = [x["q"] for x, o in zip(items, off, strict=True) if x["kind"] in ADVERSARIAL and not o]
            wrongly = [x["q"] for x, o in zip(items, off, strict=True) if x["kind"] not in ADVERSARIAL and o]
            print(f"{which:9} {cid:9} adversarial caught {sum(adv)}/{len(adv)}, others taken {sum(other)}/{len(other)}"
                  + (f"; missed: {' | '.join(missed)}" if missed else "") + (f"; taken: {' | '.join(wrongly)}" if wrongly else ""))
        # Reader mode judges its questions too: a question about the book must never be taken for off-world.
        asked = [x["q"] for x in _book_questions(cid)]
        taken = [q for q in asked if off_world(q, things_only=True)]
        print(f"{'reader':9} {cid:9} book questions taken for off-world {len(taken)}/{len(asked)}"
              + (f": {' | '.join(taken)}" if taken else ""))
        # The same questions asked in role-play, where every rule applies: ordinary questions she must answer.
        taken = [q for q in asked if off_world(q)]
        print(f"{'in role':9} {cid:9} book questions taken for off-world {len(taken)}/{len(asked)}"
              + (f": {' | '.join(taken)}" if taken else ""))
    return 0


def _book_questions(cid: str) -> list[dict]:
    """The benches' questions about her book: reader accuracy's and retrieval's (ours and held out)."""
    book = {"daiyu": "hongloumeng", "elizabeth": "pride_and_prejudice"}[cid]
    out = json.loads((REPO / "bench" / "data" / "chat_questions.json").read_text(encoding="utf-8")).get(cid, [])
    for name in ("retrieval_questions.json", "retrieval_questions_heldout.json"):
        out = out + json.loads((REPO / "bench" / "data" / name).read_text(encoding="utf-8"))[book]
    return out


def print_table(runs: list[dict]) -> None:
    for run in runs:
        for cid, s in run["characters"].items():
            print(f"{run['label']:14} {cid:10} n={s['n']:2} 1st-p {s['first_person']} break {s['breaking']} "
                  f"loops {s['loops']} echo {s['echoes']} anachr {s['anachronisms']} faults {s['faults']} "
                  f"(adversarial {s['faults_adversarial']}) facts {s['facts_ok']} unfinished {s.get('unfinished')} "
                  f"len {s['length_median']} fallback {s.get('fallback_in_world')} "
                  f"style {s['style']['answers']} (ceiling {s['style']['ceiling_held_out_lines']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="run", help="a name for this configuration in the results")
    parser.add_argument("--assistant", action="store_true", help="measure the plain assistant (style's floor)")
    parser.add_argument("--only", choices=("all", "daiyu", "elizabeth"), default="all")
    parser.add_argument("--ids", help="comma-separated prompt indices (a quick look while tuning)")
    parser.add_argument("--prompts", choices=(*PROMPT_SETS, WRONG), default="main",
                        help="main: bench/data/persona_prompts.json; heldout, heldout2-4: written later (docs/persona.md)")
    parser.add_argument("--max-tokens", type=int, default=120, help="answer cap (the mode's own cap may be lower)")
    parser.add_argument("--passages", type=int, help="role-play's first-turn passage tokens (the app's: 120; 260 before session 7)")
    parser.add_argument("--examples", type=int, help="tokens of her lines on a first turn (the app's: 60; 120 before)")
    parser.add_argument("--lines", help="her lines on a first turn and a follow-up, e.g. 2,1 (the app's: 2,0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float,
                        help="role-play's sampling temperature (the app's setting `temperature`: 0.7)")
    parser.add_argument("--seed", type=int, default=0, help="llama.cpp sampling seed (-1: random)")
    parser.add_argument("--shared", type=Path, default=Path("/tmp/zhiyin-bench"),
                        help="the home holding the full-novel stores (bench/chat_bench.py's; built there if missing)")
    parser.add_argument("--home", type=Path, default=Path("/tmp/zhiyin-persona-bench"),
                        help="this bench's home: this checkout's cards over the shared stores")
    parser.add_argument("--no-save", action="store_true", help="print, do not write the results file")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where the runs are kept (a run from a copy of the code can write into the checkout)")
    parser.add_argument("--offworld", action="store_true",
                        help="print which prompts of every set are taken for off-world (persona/strange.py; no model)")
    parser.add_argument("--rejudge", action="store_true",
                        help="judge the stored answers again with this file's rules (no model run)")
    args = parser.parse_args()
    if args.rejudge:
        return rejudge(args.results)
    if args.offworld:
        return offworld_counts()
    missing = [b for b in BOOKS.values() if not (CORPUS / b).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found in {CORPUS}; put the corpus there.", file=sys.stderr)
        return 2
    os.environ.setdefault("ZHIYIN_MODELS", str(REPO / "checkpoints"))
    if args.temperature is not None:  # as a user's settings.toml would: Companion reads it from the settings
        os.environ["ZHIYIN_TEMPERATURE"] = str(args.temperature)
    shared = args.shared.expanduser().resolve()
    ensure_stores(shared)
    os.environ["ZHIYIN_HOME"] = str(bench_home(shared, args.home.expanduser().resolve()))
    ids = [int(x) for x in args.ids.split(",")] if args.ids else None
    prompts = load_prompts(args.only, ids, args.prompts)
    t0 = time.perf_counter()
    rows = run_assistant(prompts, args) if args.assistant else run_roleplay(prompts, args)
    label = "assistant" if args.assistant else args.label
    styles = style_scores({cid: [r["answer"] for r in rs] for cid, rs in rows.items()})
    run = {"label": label, "prompts": args.prompts, "max_tokens": args.max_tokens, "seed": args.seed, "ids": ids,
           "temperature": args.temperature,
           "load_average_before": [round(x, 2) for x in os.getloadavg()], "minutes": round((time.perf_counter() - t0) / 60, 1),
           "characters": {cid: summarise(rs) | {"style": styles[cid]} for cid, rs in rows.items()}, "rows": rows}
    print_table([run])
    if args.no_save:
        return 0
    run["command"] = "python bench/persona_bench.py " + " ".join(sys.argv[1:])
    old = json.loads(args.results.read_text(encoding="utf-8")) if args.results.is_file() else {"runs": []}
    runs = [r for r in old["runs"] if r["label"] != label] + [run]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.results, json.dumps({"targets": TARGETS, "runs": runs}, ensure_ascii=False, indent=1))
    print(f"wrote {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

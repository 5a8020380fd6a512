"""Dialogue in novels: quotations found (segments), their speakers attributed by rule (zh, en),
and a character's lines paired with what came before them (lines).

    from dialogue import extract_lines
    for line in extract_lines(text, ["林黛玉", "黛玉"]): print(line.input, "->", line.output)
"""
from dialogue.attribution import ATTRIBUTORS, Attribution, Attributor
from dialogue.en import EnglishAttributor
from dialogue.lines import Line, dedupe, extract_lines
from dialogue.segments import Paragraph, Segment, segment, split_paragraphs
from dialogue.zh import ChineseAttributor, mine_zh_names

__all__ = ["ATTRIBUTORS", "Attribution", "Attributor", "ChineseAttributor", "EnglishAttributor", "Line",
           "Paragraph", "Segment", "dedupe", "extract_lines", "mine_zh_names", "segment", "split_paragraphs"]

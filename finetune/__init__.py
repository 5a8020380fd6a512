"""Persona fine-tuning from the novel itself: extract a character's lines, train a LoRA adapter."""
from finetune.extract import FORMATS, Line, dedupe, extract_lines, read_text

__all__ = ["FORMATS", "Line", "dedupe", "extract_lines", "read_text"]

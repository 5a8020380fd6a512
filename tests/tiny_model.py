"""A tiny random Qwen2 chat model built entirely in code: an offline, seconds-fast fixture
for the real loading, generation, streaming and LoRA code paths.

Use it from any test file::

    from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

    def test_something(tiny_qwen_dir): ...

or call :func:`build_tiny_qwen` directly. The model is random, so its words are noise;
it is for mechanics (shapes, streaming, settings reaching ``generate``), not for quality.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from llm.common import CHATML

# ChatML, as Qwen2.5 uses it: the system/user/assistant roles the chain sends (the app's one template).
CHAT_TEMPLATE = CHATML

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Training text for the BPE: some English, some Chinese, the chat roles.
_TRAINING_TEXT = [
    "system user assistant You are a helpful character from a novel.",
    "Hello, who are you? I am Lin Daiyu. The garden is quiet tonight.",
    "Elizabeth Bennet walked to Netherfield through the mud.",
    "林黛玉 贾宝玉 薛宝钗 王熙凤 大观园 红楼梦 葬花 潇湘馆",
    "你是谁？我是林黛玉。今天的花开得很好。宝玉来了。",
    "The quick brown fox jumps over the lazy dog. 0123456789 ,.!?;:'\"()",
] * 20


def _train_tokenizer(vocab_size: int = 400):
    """A byte-level BPE trained in memory (no downloads), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAINING_TEXT, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_qwen(path: Path, seed: int = 0) -> Path:
    """Build and save a tiny random Qwen2 (2 layers, hidden 32) with a chat tokenizer at ``path``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # Larger random weights than the 0.02 default so greedy output varies (not one
        # token repeated): streaming tests can then tell chunks apart.
        initializer_range=0.5,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # Random weights rarely pick EOS, so generation runs to max_new_tokens: handy for
    # tests that check the token cap really reaches the model.
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 chat model folder, built once per test session."""
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen") / "tiny-qwen2")

"""Persona fine-tuning: attribution on passages in several novels' styles, the CLI, LoRA training on a tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.extract import dedupe, extract_lines, read_text
from llm import adapters
from tests.tiny_model import tiny_qwen_dir  # noqa: F401  (pytest fixture)

REPO = Path(__file__).resolve().parent.parent

HONGLOU = """    宝玉笑道：“妹妹可曾读书？”黛玉道：“不曾读，只上了一年学，些须认得几个字。”宝玉又向黛玉道：“妹妹尊名是那两个字？”
    林黛玉冷笑道：“我就知道，别人不挑剩下的也不给我。”宝钗笑道：“你又多心了。”黛玉听了，便说道：“我多什么心！”
    说着，黛玉又道：“横竖我也不稀罕。”宝玉见黛玉哭了，便道：“好妹妹，是我的不是。”探春黛玉都笑道：“这可奇了。”"""

SANGUO = """    孔明曰：“亮夜观天象，曹贼当败。”玄德曰：“先生何以知之？”孔明笑曰：“天机不可泄也。”张飞大叫道：“哥哥休信他！”
    孔明曰：“翼德且住。”说罢，又曰：“三日之内，必见分晓。”孔明笑而不答。玄德曰：“军师之意若何？”关羽见孔明来了，便道：“军师来得正好。”"""

SHUIHU = """    宋江叫道：“兄弟们且慢！”李逵大叫道：“哥哥，杀将去罢！”宋江喝道：“黑厮又来胡说！”武松听了，便道：“哥哥说的是。”"""

AUSTEN = """"My dear Mr. Bennet," said his lady, "have you heard that Netherfield Park is let at last?"

"But you forget, mamma," said Elizabeth, "that we shall meet him at the assemblies."

"I do not believe Mrs. Long will do any such thing," replied her mother.

Elizabeth replied, "Then I shall go with Jane."

"It has been a very agreeable day," said Miss Bennet to Elizabeth.

Elizabeth almost stared at her. "Can this be Mr. Darcy?" thought she.

When alone with Elizabeth afterwards, she spoke more on the subject. "It seems likely," said she."""

HOLMES = """"You have been in Afghanistan, I perceive," I said.

"How on earth did you know that?" observed Holmes.

"Never mind," said he, chuckling. "It is of no consequence."

Lestrade looked at Holmes. "What do you say?" said he.

Holmes smiled. "Nothing," returned he."""


def outputs(text: str, names: list[str]) -> list[str]:
    return [line.output for line in extract_lines(text, names)]


def test_chinese_speech_tags_of_hongloumeng():
    got = outputs(HONGLOU, ["林黛玉", "黛玉"])
    assert got == ["不曾读，只上了一年学，些须认得几个字。", "我就知道，别人不挑剩下的也不给我。",
                   "我多什么心！", "横竖我也不稀罕。"]


def test_addressee_and_joint_speakers_are_not_hers():
    got = "".join(outputs(HONGLOU, ["黛玉"]))
    assert "妹妹尊名" not in got  # 宝玉又向黛玉道: she is spoken to
    assert "好妹妹" not in got  # 宝玉见黛玉哭了，便道
    assert "这可奇了" not in got  # 探春黛玉都笑道: two speakers at once


def test_classical_yue_and_continuation_sanguo():
    got = outputs(SANGUO, ["孔明", "诸葛亮"])
    assert got == ["亮夜观天象，曹贼当败。", "天机不可泄也。", "翼德且住。三日之内，必见分晓。"]


def test_shuihu_shouting_verbs():
    assert outputs(SHUIHU, ["宋江"]) == ["兄弟们且慢！", "黑厮又来胡说！"]
    assert outputs(SHUIHU, ["李逵"]) == ["哥哥，杀将去罢！"]


def test_english_tags_paragraph_and_safe_pronouns():
    got = outputs(AUSTEN, ["Elizabeth", "Miss Bennet"])
    assert got == ["But you forget, mamma, that we shall meet him at the assemblies.",
                   "Then I shall go with Jane.", "Can this be Mr. Darcy?"]


def test_reported_speech_after_a_quotation_is_no_tag():
    # Pride and Prejudice, ch. 20: Mr. Bennet's words, then Elizabeth's reply told, not quoted.
    text = ('"Come here, child," cried her father as she appeared. "I have sent for you on an affair of '
            'importance. Is it true?" Elizabeth replied that it was. "Very well."\n\n'
            '"I have, sir," Elizabeth replied.')
    assert outputs(text, ["Elizabeth"]) == ["I have, sir."]


def test_english_other_verbs_and_male_pronoun():
    got = outputs(HOLMES, ["Holmes", "Sherlock Holmes"])
    assert got == ["How on earth did you know that?", "Nothing."]


def test_each_line_is_paired_with_what_came_before():
    lines = extract_lines(AUSTEN, ["Elizabeth"])
    assert lines[0].input == "My dear Mr. Bennet, have you heard that Netherfield Park is let at last?"
    assert lines[0].input_kind == "line"
    assert "Elizabeth almost stared at her" in lines[-1].input or lines[-1].input.startswith("It has been")


def test_dedupe_drops_repeats_ignoring_punctuation():
    lines = extract_lines(HONGLOU + "\n" + HONGLOU.replace("？", "?"), ["黛玉"])
    assert len(dedupe(lines)) == len(lines) // 2


def test_reads_gb18030(tmp_path: Path):
    path = tmp_path / "book.txt"
    path.write_bytes(HONGLOU.encode("gb18030"))
    text, encoding = read_text(path)
    assert text.strip() == HONGLOU.strip() and "18030" in encoding.lower() or "gb" in encoding.lower()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finetune", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_cli_extract_writes_xtuner_and_messages(tmp_path: Path):
    book = tmp_path / "sanguo.txt"
    book.write_bytes(SANGUO.encode("gb18030"))
    out = tmp_path / "kongming.jsonl"
    r = run_cli("extract", "kongming", str(book), "--alias", "孔明", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["unique"] == 3 and "孔明" in r.stderr
    rec = json.loads(out.read_text(encoding="utf-8").splitlines()[1])
    assert rec["conversation"][0]["input"] == "先生何以知之？"
    assert rec["conversation"][0]["output"] == "天机不可泄也。"
    r = run_cli("extract", "daiyu", str(tmp_path / "none.txt"), "--out", str(out))
    assert r.returncode == 2 and "No file" in r.stderr and "Traceback" not in r.stderr
    book.write_text(HONGLOU, encoding="utf-8")
    r = run_cli("extract", "daiyu", str(book), "--out", str(out), "--format", "messages")
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
    assert "林黛玉" in rec["messages"][0]["content"]  # the card's persona


def _dataset(path: Path, n: int = 6) -> Path:
    recs = [{"conversation": [{"system": "You are Lin Daiyu.", "input": f"Hello {i}?", "output": f"I am Lin Daiyu {i}."}]}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    return path


def test_train_two_steps_save_reload_generate(tmp_path: Path, tiny_qwen_dir: Path):  # noqa: F811
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.train import TrainConfig, adapter_dir, train

    data = _dataset(tmp_path / "d.jsonl")
    result = train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=2, batch_size=2), progress=False)
    m = json.loads((result.adapter / "manifest.json").read_text(encoding="utf-8"))
    assert result.adapter.parent == adapter_dir("daiyu") and (result.adapter / "adapter_config.json").is_file()
    assert m["status"] == "complete" and len(m["loss_curve"]) == 2 and m["steps_done"] == 2
    assert len(m["base_sha256"]) == 64 and len(m["data_sha256"]) == 64
    assert {"before", "after"} <= set(m["eval"]) and m["hyperparameters"]["rank"] == 8
    # Reload as llm.py's transformers backend would (base folder + adapter), and generate.
    tok = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen_dir), result.adapter)
    ids = tok.apply_chat_template([{"role": "user", "content": "Hello?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 5
    # The adapter changed the model: its logits differ from the base's.
    with torch.no_grad(), model.disable_adapter():
        base_logits = model(**ids).logits
    assert not torch.allclose(model(**ids).logits, base_logits)


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path: Path, tiny_qwen_dir: Path):  # noqa: F811
    from finetune.train import TrainConfig, adapter_dir, train

    data = _dataset(tmp_path / "d.jsonl")

    def interrupt(step: int, loss: float) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=3), on_step=interrupt, progress=False)
    saved = adapters.latest(adapter_dir("daiyu"))
    m = json.loads((saved / "manifest.json").read_text(encoding="utf-8"))
    assert m["status"] == "interrupted" and m["steps_done"] == 1
    assert (saved / "adapter_model.safetensors").is_file()
    result = train("daiyu", data, base=str(tiny_qwen_dir), config=TrainConfig(steps=3), resume=True, progress=False)
    assert result.manifest["status"] == "complete" and [s for s, _ in result.manifest["loss_curve"]] == [1, 2, 3]
    assert result.adapter == saved  # the run continued in its own version


def test_train_cli_errors_are_one_sentence(tmp_path: Path, tiny_qwen_dir: Path):  # noqa: F811
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nope": 1}\n', encoding="utf-8")
    r = run_cli("train", "daiyu", "--data", str(bad), "--base", str(tiny_qwen_dir))
    assert r.returncode == 2 and "bad.jsonl:1" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "daiyu", "--data", str(_dataset(tmp_path / "d.jsonl")), "--base", str(tiny_qwen_dir),
                "--resume")
    assert r.returncode == 2 and "Nothing to resume" in r.stderr


def test_adapter_serves_through_llm_transformers_backend(tmp_path: Path, tiny_qwen_dir: Path):  # noqa: F811
    llm = pytest.importorskip("llm")
    from langchain_core.messages import HumanMessage, SystemMessage

    from finetune.train import TrainConfig, train

    train("daiyu", _dataset(tmp_path / "d.jsonl"), base=str(tiny_qwen_dir), config=TrainConfig(steps=2),
          progress=False)
    # The character id is enough: llm.py finds the adapter and, through its manifest, the base model.
    chat = llm.get_chat_model(llm_backend="transformers", llm_model="", llm_adapter="daiyu", max_tokens=4,
                              temperature=0.0)
    assert chat.source.adapter_dir is not None and chat.source.model_dir == tiny_qwen_dir
    reply = chat.invoke([SystemMessage("You are Lin Daiyu."), HumanMessage("Hello?")])
    assert isinstance(reply.content, str) and reply.content


def test_the_pages_button_extracts_and_trains_her_voice_in_the_background(tmp_path: Path, tiny_qwen_dir: Path):  # noqa: F811
    import dataclasses
    import time

    from characters import create_character, save_card, texts_dir
    from finetune import job
    from finetune.train import adapter_dir

    save_card(dataclasses.replace(create_character("lin", name="林黛玉"), aliases=["黛玉"]))
    with pytest.raises(job.JobError, match="no book"):
        job.start("lin")
    texts_dir("lin").mkdir(parents=True, exist_ok=True)
    (texts_dir("lin") / "hong.txt").write_text(HONGLOU, encoding="utf-8")
    assert job.status("lin") == {"running": False, "started": None, "last": "", "live": None, "eval": {}}
    job.start("lin", steps=2, extra=["--base", str(tiny_qwen_dir)])
    with pytest.raises(job.JobError, match="already being trained"):
        job.start("lin")
    assert job.status("lin")["running"]
    deadline = time.time() + 300
    while job.running("lin") and time.time() < deadline:
        time.sleep(0.5)
    now = job.status("lin")
    log = (adapter_dir("lin") / job.LOG).read_text(encoding="utf-8")
    assert not now["running"] and now["live"], log
    assert {"before", "after"} <= set(now["eval"]) and "held-out loss" in log and "lines of hers" in log
    ok, why = job.can_train()
    assert ok or "CUDA GPU" in why  # on a machine without one the page says why, and the CLI stays


def test_two_tabs_starting_her_training_at_once_start_one_run(tmp_path: Path):
    import dataclasses

    import locks
    from characters import create_character, save_card, texts_dir
    from finetune import job
    from finetune.train import adapter_dir

    save_card(dataclasses.replace(create_character("lin", name="林黛玉"), aliases=["黛玉"]))
    texts_dir("lin").mkdir(parents=True, exist_ok=True)
    (texts_dir("lin") / "hong.txt").write_text(HONGLOU, encoding="utf-8")
    held = locks.claim(adapter_dir("lin") / job.LOCK)  # the other tab's run, not yet on record
    assert held is not None and not job.running("lin")
    try:
        with pytest.raises(job.JobError, match="already being trained"):
            job.start("lin")
        assert locks.claim(adapter_dir("lin") / job.LOCK) is None  # still held, by the other run only
    finally:
        os.close(held)
    assert not (adapter_dir("lin") / job.LOG).exists()  # nothing of the other run's log was touched


def test_the_voice_command_without_texts_says_what_to_do(tmp_path: Path):
    from characters import create_character

    create_character("nobook", name="无名")
    r = run_cli("voice", "nobook")
    assert r.returncode == 2 and "has no texts" in r.stderr and "Traceback" not in r.stderr


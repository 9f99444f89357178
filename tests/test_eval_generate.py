"""relupo eval (overall and per-group accuracy) and relupo generate (padding, seeds, stop strings).

tests/fixtures/hh-rlhf-subsets.jsonl contains 10 rows from each of the four Anthropic HH-RLHF test
subsets (MIT licence), the first rows whose transcripts are under 900 characters, with their
subset name in the column "subset".
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from relupo.cli import main
from relupo.generate import Prompt, SamplingSettings, encode_prompt, generate, read_prompts, render_prompt

SUBSETS = ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]


@pytest.fixture(scope="module")
def eval_report(tmp_path_factory, bundled_model_dir):
    fixture = __import__("pathlib").Path(__file__).parent / "fixtures" / "hh-rlhf-subsets.jsonl"
    output = tmp_path_factory.mktemp("eval") / "eval.json"
    assert main(["eval", bundled_model_dir, "--data", str(fixture), "--group-column", "subset", "--output", str(output)]) == 0
    return json.loads(output.read_text())


def test_eval_groups_and_counts(eval_report):
    assert sorted(eval_report["groups"]) == SUBSETS
    assert [eval_report["groups"][name]["pairs"] for name in SUBSETS] == [10, 10, 10, 10]
    assert eval_report["overall"]["pairs"] == 40


def test_eval_overall_is_mean_of_groups(eval_report):
    groups = eval_report["groups"].values()
    for key in ("accuracy", "summed_accuracy", "margin"):
        assert eval_report["overall"][key] == pytest.approx(sum(g[key] for g in groups) / 4, abs=1e-9)


def test_eval_accuracies_are_shares_of_ten(eval_report):
    for stats in eval_report["groups"].values():
        assert stats["margin/p10"] <= stats["margin/p50"] <= stats["margin/p90"]
        for key in ("accuracy", "summed_accuracy"):
            assert stats[key] * 10 == pytest.approx(round(stats[key] * 10))


def test_eval_groups_by_file(tmp_path, bundled_model_dir, tests_dir):
    rows = (tests_dir / "fixtures" / "hh-rlhf-subsets.jsonl").read_text().splitlines()
    (tmp_path / "first.jsonl").write_text("\n".join(rows[:6]) + "\n")
    (tmp_path / "second.jsonl").write_text("\n".join(rows[10:14]) + "\n")
    output = tmp_path / "eval.json"
    assert main(["eval", bundled_model_dir, "--data", str(tmp_path / "first.jsonl"), "--data", str(tmp_path / "second.jsonl"), "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert {name: stats["pairs"] for name, stats in report["groups"].items()} == {"first.jsonl": 6, "second.jsonl": 4}


@pytest.fixture(scope="module")
def model_and_tokenizer(bundled_model_dir):
    return AutoModelForCausalLM.from_pretrained(bundled_model_dir).eval(), AutoTokenizer.from_pretrained(bundled_model_dir)


PROMPTS = [
    Prompt("text", "Once upon a time, there was a little dog"),
    Prompt("messages", [{"role": "user", "content": "Tell me a story about a cat."}]),
]


def test_generate_batched_greedy_matches_single(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    settings = SamplingSettings(max_new_tokens=12, do_sample=False, batch_size=2, stop=[])
    batched = generate(model, tokenizer, PROMPTS, settings)
    for prompt, row in zip(PROMPTS, batched):
        ids = torch.tensor([encode_prompt(render_prompt(prompt.prompt, tokenizer), tokenizer, 256)])
        output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        new_ids = output[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new_ids:
            new_ids = new_ids[: new_ids.index(tokenizer.eos_token_id)]
        assert row["response"] == tokenizer.decode(new_ids, skip_special_tokens=True).strip()


def test_generate_messages_render_hh_style(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    assert render_prompt(PROMPTS[1].prompt, tokenizer) == "\n\nHuman: Tell me a story about a cat.\n\nAssistant:"


def test_generate_seed_reproducible(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    first = generate(model, tokenizer, PROMPTS, SamplingSettings(max_new_tokens=16, seed=3, stop=[]))
    again = generate(model, tokenizer, PROMPTS, SamplingSettings(max_new_tokens=16, seed=3, stop=[]))
    other = generate(model, tokenizer, PROMPTS, SamplingSettings(max_new_tokens=16, seed=4, stop=[]))
    assert [r["response"] for r in first] == [r["response"] for r in again]
    assert [r["response"] for r in first] != [r["response"] for r in other]


def test_generate_stop_string_cuts(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    full = generate(model, tokenizer, PROMPTS[:1], SamplingSettings(max_new_tokens=16, do_sample=False, stop=[]))[0]
    word = full["response"].split()[1]
    cut = generate(model, tokenizer, PROMPTS[:1], SamplingSettings(max_new_tokens=16, do_sample=False, stop=[word]))[0]
    assert cut["finish_reason"] == "stop"
    assert cut["response"] == full["response"][: full["response"].index(word)].strip()


def test_generate_command_reads_preference_file(tmp_path, bundled_model_dir, tests_dir):
    output = tmp_path / "gen.jsonl"
    fixture = tests_dir / "fixtures" / "hh-rlhf-subsets.jsonl"
    assert main(["generate", bundled_model_dir, "--prompts", str(fixture), "--limit", "3", "--max-new-tokens", "8", "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["id"] for row in rows] == [p.prompt_id for p in read_prompts(str(fixture), limit=3)]
    assert all(row["settings"]["max_new_tokens"] == 8 and row["new_tokens"] <= 8 for row in rows)
    assert all("\n\nHuman:" not in row["response"] for row in rows)

"""Win rate and Wilson interval arithmetic, and the three kinds of judge, all offline."""

import json
import math

import pytest
import torch

from relupo.judge import judge_generations, load_judge, win_rate, wilson_interval


def test_wilson_interval_hand_computed():
    # 30 of 40, z = 1.96: centre (0.75 + 0.048018) / 1.096037 = 0.728097,
    # half-width 1.96 * sqrt(0.0046875 + 0.00060023) / 1.096037 = 0.130035.
    low, high = wilson_interval(30, 40)
    assert low == pytest.approx(0.5981, abs=1e-4)
    assert high == pytest.approx(0.8581, abs=1e-4)


def test_wilson_interval_zero_successes():
    # 0 of 5: centre = half-width = (z^2 / 10) / (1 + z^2 / 5) = 0.384146 / 1.768292 = 0.217241.
    low, high = wilson_interval(0, 5)
    assert low == 0.0
    assert high == pytest.approx(0.434482, abs=1e-5)


def test_wilson_interval_no_trials():
    assert all(math.isnan(value) for value in wilson_interval(0, 0))


def test_win_rate_counts_and_ties():
    scores_a = [1.0] * 30 + [0.0] * 10 + [0.5] * 10
    scores_b = [0.0] * 30 + [1.0] * 10 + [0.5] * 10
    result = win_rate(scores_a, scores_b)
    assert (result.wins, result.losses, result.ties) == (30, 10, 10)
    assert result.win_rate == 0.75
    assert result.tie_rate == 0.2
    assert result.win_rate_ties_half == pytest.approx(0.7)
    assert result.ci_low == pytest.approx(0.5981, abs=1e-4)
    assert result.ci_high == pytest.approx(0.8581, abs=1e-4)


def test_win_rate_tie_tolerance():
    result = win_rate([0.30, 0.50, 0.90], [0.29, 0.60, 0.10], tie_tolerance=0.05)
    assert (result.wins, result.losses, result.ties) == (1, 1, 1)


def test_win_rate_all_ties():
    result = win_rate([0.1, 0.2], [0.1, 0.2])
    assert result.ties == 2
    assert math.isnan(result.win_rate)
    assert result.win_rate_ties_half == 0.5


def test_vader_judge_prefers_positive_wording():
    _, score = load_judge("vader")
    good, bad = score([("How was it?", "It was wonderful, thank you!"), ("How was it?", "It was terrible and awful.")])
    assert good > 0.5
    assert bad < -0.5


def length_judge(prompt, response):
    return float(len(response))


def test_callable_judge_end_to_end(tmp_path):
    rows_a = [{"id": "p1", "prompt": "Hi", "response": "a long answer"}, {"id": "p2", "prompt": "Hi", "response": "x"},
              {"id": "p3", "prompt": [{"role": "user", "content": "Hi"}], "response": "same"}, {"id": "only-a", "prompt": "Hi", "response": "z"}]
    rows_b = [{"id": "p1", "prompt": "Hi", "response": "short"}, {"id": "p2", "prompt": "Hi", "response": "longer"},
              {"id": "p3", "prompt": [{"role": "user", "content": "Hi"}], "response": "four"}]
    for name, rows in (("a.jsonl", rows_a), ("b.jsonl", rows_b)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = judge_generations(tmp_path / "a.jsonl", tmp_path / "b.jsonl", f"{__name__}:length_judge")
    assert result["prompts"] == 3
    assert result["prompts_only_in_one_file"] == 1
    assert (result["wins"], result["losses"], result["ties"]) == (1, 1, 1)
    assert result["win_rate"] == 0.5


def test_reward_model_judge_matches_direct_forward(tmp_path, bundled_model_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(bundled_model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    config.pad_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")

    _, score = load_judge(str(tmp_path / "rm"))
    items = [("\n\nHuman: Hi\n\nAssistant:", "Hello there."), ("\n\nHuman: Hi\n\nAssistant:", "Go away, it is a long story.")]
    scores = score(items)
    model.eval()
    for (prompt, response), value in zip(items, scores):
        inputs = tokenizer(prompt + " " + response, return_tensors="pt")
        with torch.no_grad():
            expected = model(**inputs).logits[0, 0].item()
        assert value == pytest.approx(expected, abs=1e-4)

"""Judged win rate of one model's generations over another's on the same prompts.

A judge scores (prompt, response); on each prompt the response with the higher score wins, and
scores within `tie_tolerance` of each other tie. Three kinds of judge:

- `vader`: the VADER sentiment scorer (`relupo.judges.vader_sentiment`), which ships its lexicon
  and needs no download. It rewards positive wording, not quality: a smoke test of the pipeline.
- `module:function`: any Python callable `function(prompt: str, response: str) -> float`.
- anything else: a Hugging Face sequence-classification reward model (local directory or hub id),
  scoring the prompt and response rendered with its chat template when it has one.

Statistics, with n prompts, W wins of A, L losses and T ties (n = W + L + T):

- win_rate = W / (W + L), ties left out, with the 95% Wilson score interval for a binomial
  proportion on W + L trials (Wilson 1927): centre (p + z^2/2m) / (1 + z^2/m) and half-width
  z sqrt(p(1-p)/m + z^2/4m^2) / (1 + z^2/m), with p = W/m, m = W + L, z = 1.959964.
- tie_rate = T / n, reported separately.
- win_rate_ties_half = (W + T/2) / n, the usual "ties count half" point estimate, without interval.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from relupo.data.formats import render_messages
from relupo.errors import ConfigError, DataError

Z_95 = 1.959963984540054  # standard normal quantile at 0.975

Scorer = Callable[[list[tuple[Any, str]]], list[float]]


@dataclass(frozen=True)
class WinRate:
    wins: int
    losses: int
    ties: int
    win_rate: float  # W / (W + L); NaN when every comparison tied
    ci_low: float
    ci_high: float
    tie_rate: float
    win_rate_ties_half: float

    @property
    def comparisons(self) -> int:
        return self.wins + self.losses + self.ties


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (nan, nan) for zero trials."""
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def win_rate(scores_a: list[float], scores_b: list[float], tie_tolerance: float = 0.0) -> WinRate:
    """Count wins of A over B per prompt (score difference above tie_tolerance) and summarize them."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"need the same nonzero number of scores for A and B, got {len(scores_a)} and {len(scores_b)}")
    wins = sum(a - b > tie_tolerance for a, b in zip(scores_a, scores_b))
    losses = sum(b - a > tie_tolerance for a, b in zip(scores_a, scores_b))
    ties = len(scores_a) - wins - losses
    low, high = wilson_interval(wins, wins + losses)
    return WinRate(
        wins=wins,
        losses=losses,
        ties=ties,
        win_rate=wins / (wins + losses) if wins + losses else math.nan,
        ci_low=low,
        ci_high=high,
        tie_rate=ties / len(scores_a),
        win_rate_ties_half=(wins + ties / 2) / len(scores_a),
    )


def prompt_text(prompt: Any) -> str:
    """Render a prompt as one string: text as it is, a message list in HH transcript style."""
    return prompt if isinstance(prompt, str) else render_messages(prompt, add_generation_prompt=True)


def load_judge(spec: str, batch_size: int = 16) -> tuple[str, Scorer]:
    """Return (description, scorer) for `vader`, `module:function` or a reward-model path or hub id."""
    if spec == "vader":
        spec = "relupo.judges:vader_sentiment"
    if ":" in spec and not Path(spec).exists():
        module_name, _, function_name = spec.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"--judge {spec}: cannot import {function_name} from {module_name} ({error}).") from None
        return spec, lambda items: [float(function(prompt_text(p), r)) for p, r in items]
    return f"reward model {spec}", _reward_model_scorer(spec, batch_size)


def _reward_model_scorer(name: str, batch_size: int) -> Scorer:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSequenceClassification.from_pretrained(name).eval()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = model.to(device)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"--judge {name}: cannot load a sequence-classification model ({str(error).strip().splitlines()[0]}). "
            f"Give vader, module:function, or a local directory or hub id of a reward model."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    # Tokenizers without a limit report a huge model_max_length; cap those at 2048 tokens.
    # NOTE: longer texts lose their end, which is the response the judge should score.
    max_length = tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else 2048

    def render(prompt: Any, response: str) -> str:
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
        return prompt_text(prompt) + " " + response

    def score(items: list[tuple[Any, str]]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(items), batch_size):
            texts = [render(p, r) for p, r in items[start : start + batch_size]]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
            with torch.inference_mode():
                logits = model(**inputs.to(device)).logits.float().cpu()
            # One output: the reward itself. Two or more: the last class (preferred) minus the first.
            rewards = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
            scores += rewards.tolist()
        return scores

    return score


def read_generations(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a `relupo generate` output file, keyed by prompt id."""
    rows: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "id" not in row or "response" not in row:
                raise DataError(f"{path}, line {number}: a generation row needs id and response fields (as written by relupo generate).")
            rows[str(row["id"])] = row
    return rows


def judge_generations(path_a: str | Path, path_b: str | Path, judge: str, tie_tolerance: float = 0.0) -> dict[str, Any]:
    """Score both files' responses on their shared prompts and return the win rate of A over B."""
    rows_a, rows_b = read_generations(path_a), read_generations(path_b)
    shared = [key for key in rows_a if key in rows_b]
    if not shared:
        raise DataError(f"{path_a} and {path_b} share no prompt id; generate both from the same prompts.")
    description, scorer = load_judge(judge)
    scores_a = scorer([(rows_a[k]["prompt"], rows_a[k]["response"]) for k in shared])
    scores_b = scorer([(rows_b[k]["prompt"], rows_b[k]["response"]) for k in shared])
    result = win_rate(scores_a, scores_b, tie_tolerance)
    return {
        "a": str(path_a),
        "b": str(path_b),
        "judge": description,
        "tie_tolerance": tie_tolerance,
        "prompts": len(shared),
        "prompts_only_in_one_file": len(rows_a) + len(rows_b) - 2 * len(shared),
        **asdict(result),
        "mean_score_a": sum(scores_a) / len(scores_a),
        "mean_score_b": sum(scores_b) / len(scores_b),
        "per_prompt": [{"id": k, "score_a": a, "score_b": b} for k, a, b in zip(shared, scores_a, scores_b)],
    }


def format_result(result: dict[str, Any]) -> str:
    return (
        f"judge: {result['judge']}; {result['prompts']} prompts\n"
        f"A ({result['a']}) vs B ({result['b']}): {result['wins']} wins, {result['losses']} losses, {result['ties']} ties\n"
        f"win rate of A (ties left out): {result['win_rate']:.3f}, 95% Wilson interval [{result['ci_low']:.3f}, {result['ci_high']:.3f}]\n"
        f"tie rate: {result['tie_rate']:.3f}; win rate with ties counted as half: {result['win_rate_ties_half']:.3f}\n"
        f"mean score: A {result['mean_score_a']:.4f}, B {result['mean_score_b']:.4f}"
    )

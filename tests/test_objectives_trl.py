"""Objectives against TRL's own loss code on identical log-prob inputs.

TRL's loss code sits on trainer methods whose trainers need a model, a tokenizer and a dataset to
construct. Each test builds the trainer with `object.__new__(Trainer)` instead and sets only the
attributes the loss method reads. The attribute lists and the fake model output follow trl 1.16's
source; another TRL version may read other attributes and fail here without any relupo change.

Where TRL's definition differs from the method's paper (cited in the objective's docstring), a
comment says how. The paper's form is checked by hand in test_objectives.py, and the part that
matches is compared with TRL here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")
from trl import DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

from relupo.objectives import OBJECTIVES, PairLogps, sft_loss  # noqa: E402

TOLERANCE = dict(atol=1e-6, rtol=0)
ACCELERATOR = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)


def random_pairs(size: int = 8, seed: int = 0) -> PairLogps:
    generator = torch.Generator().manual_seed(seed)
    chosen_lengths = torch.randint(1, 12, (size,), generator=generator).double()
    rejected_lengths = torch.randint(1, 12, (size,), generator=generator).double()
    mean_logps = -torch.rand(4, size, generator=generator, dtype=torch.float64) * 2 - 0.05
    return PairLogps(
        chosen_logps=mean_logps[0] * chosen_lengths,
        rejected_logps=mean_logps[1] * rejected_lengths,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
        reference_chosen_logps=mean_logps[2] * chosen_lengths,
        reference_rejected_logps=mean_logps[3] * rejected_lengths,
    )


def select(logps: PairLogps, index: int) -> PairLogps:
    sliced = {f.name: getattr(logps, f.name) for f in fields(logps)}
    return PairLogps(**{name: None if t is None else t[index : index + 1] for name, t in sliced.items()})


def dpo_trainer_loss(logps: PairLogps, loss_type: str, beta: float) -> torch.Tensor:
    """Run trl.DPOTrainer._compute_loss on one pair whose log-probs are `logps`.

    In trl 1.16 DPO's losses are inline in _compute_loss, after the model forward, so a fake model
    returns per-token log-probs that sum to the wanted sequence log-probs. Completion lengths come
    from the completion mask, which the IPO branch divides by.
    """
    lengths = torch.cat([logps.chosen_lengths, logps.rejected_lengths]).long()
    width = int(lengths.max()) + 1  # position 0 is a prompt token
    completion_mask = torch.zeros(2, width, dtype=torch.long)
    for row, length in enumerate(lengths):
        completion_mask[row, 1 : 1 + length] = 1
    per_token_logps = torch.zeros(2, width - 1, dtype=torch.float64)
    per_token_logps[:, 0] = torch.cat([logps.chosen_logps, logps.rejected_logps])

    def model(**kwargs):
        zeros = torch.zeros_like(per_token_logps)
        return SimpleNamespace(log_probs=per_token_logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    model.training = False
    trainer = object.__new__(DPOTrainer)
    trainer.model = model
    trainer.accelerator = ACCELERATOR
    trainer.aux_loss_enabled = False
    trainer.ld_alpha = None
    trainer.precompute_ref_logps = True
    trainer.f_divergence_type = "reverse_kl"
    trainer.loss_types = [loss_type]
    trainer.loss_weights = [1.0]
    trainer.beta = beta
    trainer.label_smoothing = 0.0
    trainer.use_weighting = False
    trainer._metrics = defaultdict(lambda: defaultdict(list))
    trainer._total_train_tokens = 0
    inputs = {
        "input_ids": torch.zeros(2, width, dtype=torch.long),
        "attention_mask": torch.ones(2, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": logps.reference_chosen_logps,
        "ref_rejected_logps": logps.reference_rejected_logps,
    }
    return trainer._compute_loss(model, inputs, return_outputs=False)


def dpo_trainer_losses(logps: PairLogps, loss_type: str, beta: float) -> torch.Tensor:
    """Per-pair TRL losses: _compute_loss returns a batch mean, so it runs once per pair."""
    size = logps.chosen_logps.shape[0]
    return torch.stack([dpo_trainer_loss(select(logps, i), loss_type, beta) for i in range(size)])


def cpo_trainer(loss_type: str, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.0) -> CPOTrainer:
    trainer = object.__new__(CPOTrainer)
    trainer.accelerator = ACCELERATOR
    trainer.alpha = 0.0  # AlphaPO reward shaping off: rewards are the log-probs themselves
    trainer.loss_type = loss_type
    trainer.beta = beta
    trainer.label_smoothing = label_smoothing
    trainer.simpo_gamma = simpo_gamma
    return trainer


def test_dpo_matches_dpo_trainer_sigmoid():
    logps = random_pairs()
    ours = OBJECTIVES["dpo"].function(logps, beta=0.1, label_smoothing=0.0).losses
    torch.testing.assert_close(ours, dpo_trainer_losses(logps, "sigmoid", beta=0.1), **TOLERANCE)


def test_dpo_label_smoothing_matches_cpo_trainer_sigmoid():
    # trl 1.16's DPOTrainer "sigmoid" loss ignores label_smoothing, and its "robust" loss is a
    # different, unbiased estimator. CPOTrainer.cpo_loss "sigmoid" is the conservative DPO formula
    # applied to whatever log-probs it gets, so it receives the policy-to-reference log-ratios.
    logps = random_pairs()
    ours = OBJECTIVES["dpo"].function(logps, beta=0.1, label_smoothing=0.2).losses
    theirs, _, _ = cpo_trainer("sigmoid", beta=0.1, label_smoothing=0.2).cpo_loss(
        logps.chosen_logps - logps.reference_chosen_logps,
        logps.rejected_logps - logps.reference_rejected_logps,
    )
    torch.testing.assert_close(ours, theirs, **TOLERANCE)


def test_dpo_repo_matches_dpo_trainer_hinge():
    # TRL's hinge loss is ReLU(1 - beta * h) = beta * ReLU(1 / beta - h): DPO+RePO with
    # gamma = 1 / beta, scaled by beta. relupo's dpo+repo has no beta, as in the RePO paper.
    logps = random_pairs()
    ours = OBJECTIVES["dpo+repo"].function(logps, gamma=2.0).losses
    torch.testing.assert_close(0.5 * ours, dpo_trainer_losses(logps, "hinge", beta=0.5), **TOLERANCE)


def test_ipo_matches_dpo_trainer_one_token():
    # TRL's DPOTrainer IPO divides each log-ratio by its response length before the square; the
    # IPO paper's h is on whole-sequence log-probs, which relupo follows. They agree only when
    # every response is one token long.
    logps = random_pairs()
    ones = torch.ones_like(logps.chosen_lengths)
    single_tokens = PairLogps(
        logps.chosen_logps, logps.rejected_logps, ones, ones, logps.reference_chosen_logps, logps.reference_rejected_logps
    )
    ours = OBJECTIVES["ipo"].function(single_tokens, tau=0.1).losses
    torch.testing.assert_close(ours, dpo_trainer_losses(single_tokens, "ipo", beta=0.1), **TOLERANCE)


def test_ipo_differs_from_dpo_trainer_longer():
    logps = random_pairs()
    ours = OBJECTIVES["ipo"].function(logps, tau=0.1).losses
    assert not torch.allclose(ours, dpo_trainer_losses(logps, "ipo", beta=0.1), **TOLERANCE)


def test_ipo_matches_cpo_trainer_ipo():
    # CPOTrainer.cpo_loss "ipo" is (logits - 1 / (2 beta))^2 on the log-probs it gets; given the
    # summed log-ratios it is the IPO paper's loss with tau = beta.
    logps = random_pairs()
    ours = OBJECTIVES["ipo"].function(logps, tau=0.1).losses
    theirs, _, _ = cpo_trainer("ipo", beta=0.1).cpo_loss(
        logps.chosen_logps - logps.reference_chosen_logps,
        logps.rejected_logps - logps.reference_rejected_logps,
    )
    torch.testing.assert_close(ours, theirs, **TOLERANCE)


def test_simpo_matches_cpo_trainer_simpo():
    # TRL's simpo_gamma is the SimPO paper's gamma, a margin on beta * M; relupo's gamma is the
    # margin on M, so simpo_gamma = beta * gamma. CPOTrainer gives SimPO the mean log-probs.
    logps = random_pairs()
    ours = OBJECTIVES["simpo"].function(logps, beta=2.5, gamma=0.6).losses
    theirs, _, _ = cpo_trainer("simpo", beta=2.5, simpo_gamma=2.5 * 0.6).cpo_loss(
        logps.chosen_mean_logps, logps.rejected_mean_logps
    )
    torch.testing.assert_close(ours, theirs, **TOLERANCE)


def test_repo_matches_cpo_trainer_hinge():
    # TRL has no RePO. Its CPOTrainer hinge loss on mean log-probs is ReLU(1 - beta * M), which is
    # beta * RePO with gamma = 1 / beta.
    logps = random_pairs()
    ours = OBJECTIVES["repo"].function(logps, gamma=0.5).losses
    theirs, _, _ = cpo_trainer("hinge", beta=2.0).cpo_loss(logps.chosen_mean_logps, logps.rejected_mean_logps)
    torch.testing.assert_close(2.0 * ours, theirs, **TOLERANCE)


def test_cpo_preference_term_matches_cpo_trainer():
    # TRL adds cpo_alpha times a cross-entropy averaged over all chosen tokens of the batch;
    # relupo averages per pair, which agrees when chosen lengths are equal. The NLL term is
    # checked by hand in test_objectives.py, so it is removed here.
    logps = random_pairs()
    output = OBJECTIVES["cpo"].function(logps, beta=0.1, nll_weight=1.0)
    theirs, _, _ = cpo_trainer("sigmoid", beta=0.1).cpo_loss(logps.chosen_logps, logps.rejected_logps)
    torch.testing.assert_close(output.losses - sft_loss(logps), theirs, **TOLERANCE)


def test_slic_hinge_matches_cpo_trainer_hinge():
    # CPOTrainer's hinge on summed log-probs is ReLU(1 - beta * m) = beta * ReLU(1 / beta - m):
    # SLiC-HF's rank calibration loss with delta = 1 / beta, scaled by beta.
    logps = random_pairs()
    ours = OBJECTIVES["slic"].function(logps, delta=2.0, nll_weight=0.0).losses
    theirs, _, _ = cpo_trainer("hinge", beta=0.5).cpo_loss(logps.chosen_logps, logps.rejected_logps)
    torch.testing.assert_close(0.5 * ours, theirs, **TOLERANCE)


def test_orpo_odds_ratio_term_matches_orpo_trainer():
    # ORPOTrainer.odds_ratio_loss returns beta * log sigmoid(log odds ratio) per pair from the mean
    # log-probs (TRL's beta is the paper's lambda), and the trainer subtracts its mean from a
    # cross-entropy averaged over all chosen tokens of the batch. relupo's NLL is per pair, checked
    # by hand in test_objectives.py, so it is removed here. The odds formula is the same as TRL's.
    logps = random_pairs()
    output = OBJECTIVES["orpo"].function(logps, odds_ratio_weight=0.1)
    trainer = object.__new__(ORPOTrainer)
    trainer.accelerator = ACCELERATOR
    trainer.beta = 0.1
    theirs, _, _, _, mean_log_odds = trainer.odds_ratio_loss(logps.chosen_mean_logps, logps.rejected_mean_logps)
    torch.testing.assert_close(output.losses - sft_loss(logps), -theirs.double(), **TOLERANCE)
    torch.testing.assert_close(output.margins.mean(), mean_log_odds.double(), **TOLERANCE)

"""physeg.models.losses against hand computation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from physeg.models.losses import aleatoric_loss, cross_entropy, segmentation_loss, soft_dice, stratification_loss


def test_stratification_loss_is_mean_pairwise_msd():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 3, 2, 2, 2, generator=g)
    pairs = [((f[i] - f[j]) ** 2).mean() for i, j in itertools.combinations(range(4), 2)]
    expected = torch.stack(pairs).mean()
    torch.testing.assert_close(stratification_loss(f), expected)
    # twice the unbiased variance around the batch mean
    torch.testing.assert_close(stratification_loss(f), 2 * f.var(0, unbiased=True).mean())


def test_stratification_loss_tiny_by_hand():
    f = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # N=3, D=2
    # pairs: (0,2)->(4+0)/2=2, (0,4)->16/2=8, (2,4)->4/2=2 ; mean = 4
    assert stratification_loss(f).item() == pytest.approx(4.0)
    assert stratification_loss(f[:1]).item() == 0.0
    assert stratification_loss(f[[1, 1]]).item() == 0.0


def test_cross_entropy_by_hand():
    logits = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]]).permute(1, 0, 2)  # (B=1, C=2, S=2)
    labels = torch.tensor([[0, 1]])
    l0 = -math.log(math.e / (math.e + 1))
    l1 = -math.log(math.e ** 2 / (1 + math.e ** 2))
    assert cross_entropy(logits, labels).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_aleatoric_loss_matches_hand_computation():
    # one voxel, two classes, T = 2 fixed noise draws
    f = torch.tensor([1.0, -1.0]).reshape(1, 2, 1)
    sigma = torch.tensor([0.5, 2.0]).reshape(1, 2, 1)
    y = torch.tensor([[1]])
    eps = torch.tensor([[1.0, -1.0], [0.0, 2.0]]).reshape(2, 1, 2, 1)
    total = 0.0
    for e in ([1.0, -1.0], [0.0, 2.0]):
        x = [1.0 + 0.5 * e[0], -1.0 + 2.0 * e[1]]
        total += -x[1] + math.log(math.exp(x[0]) + math.exp(x[1]))
    expected = total / 2
    assert aleatoric_loss(f, sigma, y, noise=eps).item() == pytest.approx(expected, rel=1e-6)
    # sigma = 0 reduces to cross-entropy, whatever the noise
    assert aleatoric_loss(f, sigma * 0, y, passes=3).item() == pytest.approx(cross_entropy(f, y).item())


def test_soft_dice_perfect_and_segmentation_loss_parts():
    labels = torch.tensor([[0, 1, 2, 3]])
    logits = torch.nn.functional.one_hot(labels, 4).movedim(-1, 1).float() * 50
    assert soft_dice(logits, labels).item() == pytest.approx(0.0, abs=1e-4)
    feats = torch.randn(1, 2, 4)
    parts = segmentation_loss({"logits": logits, "features": feats}, labels, strat_weight=10.0)
    assert parts["strat"].item() == 0.0  # one item: no pairs
    feats2 = torch.randn(2, 2, 4)
    logits2 = logits.expand(2, -1, -1)
    labels2 = labels.expand(2, -1)
    parts = segmentation_loss({"logits": logits2, "features": feats2}, labels2, strat_weight=10.0)
    expected = parts["ce"] + 10.0 * stratification_loss(feats2)
    torch.testing.assert_close(parts["loss"], expected)
    parts = segmentation_loss({"logits": logits2, "features": feats2, "sigma": torch.zeros_like(logits2)},
                              labels2, aleatoric_passes=2)
    torch.testing.assert_close(parts["loss"], cross_entropy(logits2, labels2))

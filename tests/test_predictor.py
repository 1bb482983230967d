"""physeg.inference.predictor: the one predictor (sliding window, Monte-Carlo samples)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from physeg.inference.predictor import Predictor, class_argmax
from physeg.models.network import NetworkConfig, build_network
from physeg.models.sampling import sample_logits

SHAPE = (12, 11, 10)


def _net(uncertainty: str = "none", physics: str = "early+late") -> nn.Module:
    torch.manual_seed(0)
    cfg = NetworkConfig(channels=(2, 4), physics=physics, uncertainty=uncertainty,
                        sequence="MPRAGE" if physics != "none" else None)
    return build_network(cfg).eval()


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand((1, *SHAPE), generator=torch.Generator().manual_seed(seed))


THETA = torch.tensor([0.9])  # MPRAGE TI in seconds


class StubAleatoric(nn.Module):
    """Per-voxel logits and σ that are simple functions of the image (one window = the whole image)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.0, 1.0, -1.0, 0.5]))
        self.config = SimpleNamespace(uncertainty="aleatoric")
        self.uses_physics = False
        self.calls = 0

    def heads(self, x: torch.Tensor, params=None) -> dict[str, torch.Tensor]:
        self.calls += 1
        logits = torch.cat([x * self.w[c] + 0.2 * c for c in range(4)], 1)
        return {"logits": logits, "sigma": 0.5 + x.abs().expand_as(logits)}


@pytest.mark.parametrize("kind", ["none", "aleatoric", "epistemic"])
def test_sample_shapes_and_consistency(kind):
    pred = Predictor(_net(kind), patch_size=8, overlap=0.25)
    s = pred.sample(_image(), THETA, n=5, generator=torch.Generator().manual_seed(1), seed=2)
    n = 1 if kind == "none" else 5
    assert s.kind == kind and s.n == n and s.counts.shape == (n, 3) and s.counts.dtype == np.int64
    assert s.votes.shape == s.probabilities.shape == (4, *SHAPE) and s.labels.shape == SHAPE
    assert torch.allclose(s.probabilities.sum(0), torch.ones(SHAPE), atol=1e-5)
    # label map and volumes come from the same samples: the votes add up to the counts
    votes = (s.votes * n).round().long()
    assert torch.equal(votes.sum(0), torch.full(SHAPE, n))
    assert votes.reshape(4, -1).sum(1)[1:].tolist() == s.counts.sum(0).tolist()
    assert torch.equal(s.labels.long(), class_argmax(s.votes[None])[0])
    # maps=False: the same counts (same draws), nothing else
    fast = pred.sample(_image(), THETA, n=5, generator=torch.Generator().manual_seed(1), seed=2, maps=False)
    assert np.array_equal(fast.counts, s.counts) and fast.labels is None and fast.probabilities is None


def test_deterministic_sample_is_the_argmax_of_the_logits():
    pred = Predictor(_net(), patch_size=8, overlap=0.25)
    logits = pred.logits(_image(), THETA)
    s = pred.sample(_image(), THETA, n=7)
    assert torch.equal(s.labels.long(), logits[0].argmax(0))
    assert torch.allclose(s.probabilities, torch.softmax(logits[0], 0))
    assert torch.equal(pred.labels(_image(), THETA)[0], logits[0].argmax(0))


def test_aleatoric_samples_are_one_forward_pass_and_the_majority_of_their_label_maps():
    net = StubAleatoric()
    pred = Predictor(net, patch_size=SHAPE, overlap=0.25)
    x, n = _image(), 9
    f, sigma = pred.logits(x, sigma=True)
    calls_one_pass = net.calls
    net.calls = 0
    s = pred.sample(x, n=n, generator=torch.Generator().manual_seed(3))
    assert net.calls == calls_one_pass == 1
    # the same draws by hand: per class, (n, V) standard normals (physeg.models.sampling.logit_noise)
    g = torch.Generator().manual_seed(3)
    eps = torch.stack([torch.randn((n, f[0, 0].numel()), generator=g) for _ in range(4)], 1)
    noisy = f.reshape(1, 4, -1) + sigma.reshape(1, 4, -1) * eps  # (n, C, V)
    labels = noisy.argmax(1)
    assert s.counts.tolist() == [[int((lab == c).sum()) for c in (1, 2, 3)] for lab in labels]
    one_hot = torch.stack([(labels == c).sum(0) for c in range(4)])  # votes per class and voxel
    majority = one_hot.argmax(0)  # first maximum: lowest class wins ties, as class_argmax
    assert torch.equal(s.labels.long().reshape(-1), majority)
    assert torch.allclose(s.probabilities.reshape(4, -1), torch.softmax(noisy, 1).mean(0), atol=1e-6)


def test_aleatoric_counts_follow_the_sample_logits_distribution():
    net = StubAleatoric()
    pred = Predictor(net, patch_size=SHAPE, overlap=0.25)
    x, n = _image(), 3000
    f, sigma = pred.logits(x, sigma=True)
    fused = pred.sample(x, n=n, generator=torch.Generator().manual_seed(1), maps=False).counts.mean(0)
    ref = sample_logits(f[0], sigma[0], n, generator=torch.Generator().manual_seed(2)).argmax(1)
    ref = np.array([(ref == k).sum((1, 2, 3)).double().mean().item() for k in (1, 2, 3)])
    np.testing.assert_allclose(fused, ref, rtol=0.03)


def _fixed_mask(x, p):
    """A dropout mask that is the same for every sample and window: keep the even channels."""
    return (torch.arange(x.shape[1]) % 2 == 0).reshape(1, -1, *([1] * (x.ndim - 2))).expand_as(x)


def test_epistemic_batched_equals_sequential_given_the_same_masks(monkeypatch):
    from physeg.models import sampling

    monkeypatch.setattr(sampling, "dropout_keep_mask", _fixed_mask)
    net = _net("epistemic")
    x, n = _image(), 5
    s = Predictor(net, patch_size=8, overlap=0.25, copies=2, sw_batch_size=3).sample(x, THETA, n=n, seed=0)
    # the old loop: one sliding-window pass at a time, softmax accumulated per pass
    from physeg.models.sampling import mc_dropout

    probs, counts = 0, []
    with torch.no_grad(), mc_dropout(net):
        for _ in range(n):
            lg = sliding_window_inference(x[None], (8, 8, 8), 8, lambda w: net.heads(w, THETA[None])["logits"],
                                          overlap=0.25, mode="gaussian")
            probs = probs + torch.softmax(lg, 1)[0]
            counts.append([int((lg[0].argmax(0) == c).sum()) for c in (1, 2, 3)])
    assert s.counts.tolist() == counts
    assert torch.allclose(s.probabilities, probs / n, atol=1e-5)
    assert torch.equal(s.labels.long(), lg[0].argmax(0))


def test_epistemic_seeded_reproducible_and_caller_rng_untouched():
    pred = Predictor(_net("epistemic"), patch_size=8, overlap=0.25, copies=3)
    state = torch.get_rng_state()
    a = pred.sample(_image(), THETA, n=6, seed=11, maps=False).counts
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(a, pred.sample(_image(), THETA, n=6, seed=11, maps=False).counts)
    assert len({tuple(r) for r in a}) > 1  # MC dropout (p = 0.5): the samples differ
    assert not np.array_equal(a, pred.sample(_image(), THETA, n=6, seed=12, maps=False).counts)


def test_predictor_from_plans_and_profile_and_eval_flags():
    from physeg.models.registry import get_model_spec
    from physeg.profiles import get_profile
    from physeg.training.identity import make_plans

    prof = get_profile("smoke")
    plans = make_plans(get_model_spec("Baseline"), profile=prof, sequence="MPRAGE")
    net = _net(physics="none").train()
    for pred in (Predictor.from_plans(net, plans), Predictor.from_profile(net, prof)):
        assert pred.patch_size == (prof.patch_size,) * 3 and pred.overlap == prof.sw_overlap
        assert not pred.uses_physics and pred.uncertainty == "none"
    Predictor(net, patch_size=8, overlap=0.25).logits(_image())
    assert net.training  # the caller's train/eval flags come back


@pytest.mark.parametrize("p", [0.5, 0.05, 0.25])
def test_mc_dropout_masks_are_bernoulli(p):
    from physeg.models.sampling import dropout_keep_mask, mc_dropout

    x = torch.ones(200_000)
    keep = dropout_keep_mask(x, p).double().mean().item()
    assert abs(keep - (1 - p)) < 4 * (p * (1 - p) / x.numel()) ** 0.5
    drop = nn.Sequential(nn.Dropout(p)).eval()
    with mc_dropout(drop):
        y = drop(x)
    assert set(torch.unique(y).tolist()) <= {0.0, torch.tensor(1 / (1 - p)).item()} and abs(y.mean().item() - 1) < 0.02
    assert "forward" not in vars(drop[0]) and not drop[0].training  # the module is as it was
    assert torch.equal(drop(x), x)


def test_windows_per_call_change_speed_not_logits():
    net = _net()
    ref = Predictor(net, patch_size=8, overlap=0.25).logits(_image(), THETA)
    for sw in (1, 3, 100):
        out = Predictor(net, patch_size=8, overlap=0.25, sw_batch_size=sw).logits(_image(), THETA)
        assert torch.allclose(out, ref, atol=1e-6)


def test_class_argmax_matches_argmax_first_maximum():
    x = torch.randint(0, 3, (2, 4, 5, 6)).float()  # many ties
    assert torch.equal(class_argmax(x), x.argmax(1))

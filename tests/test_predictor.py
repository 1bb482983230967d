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


def test_aleatoric_samples_are_one_forward_pass_and_the_majority_of_their_label_maps(monkeypatch):
    from physeg.inference import aleatoric

    net = StubAleatoric()
    pred = Predictor(net, patch_size=SHAPE, overlap=0.25)
    x, n = _image(), 9
    f, sigma = pred.logits(x, sigma=True)
    calls_one_pass = net.calls
    net.calls = 0
    monkeypatch.setattr(aleatoric, "BLOCK_ELEMENTS", n * 500)  # blocks of 500 voxels: 500, 500, 320
    s = pred.sample(x, n=n, generator=torch.Generator().manual_seed(3))
    assert net.calls == calls_one_pass == 1
    # the same draws by hand: block j's generator is seeded by the j-th integer drawn from the caller's
    # generator, and draws per class (n, block) standard normals (physeg.models.sampling.logit_noise)
    V = f[0, 0].numel()
    seeds = torch.randint(0, 2 ** 62, (3,), generator=torch.Generator().manual_seed(3)).tolist()
    eps = []
    for a, seed in zip(range(0, V, 500), seeds):
        g = torch.Generator().manual_seed(seed)
        eps.append(torch.stack([torch.randn((n, min(V, a + 500) - a), generator=g) for _ in range(4)], 1))
    eps = torch.cat(eps, 2)
    noisy = f.reshape(1, 4, -1) + sigma.reshape(1, 4, -1) * eps  # (n, C, V)
    labels = noisy.argmax(1)
    assert s.counts.tolist() == [[int((lab == c).sum()) for c in (1, 2, 3)] for lab in labels]
    one_hot = torch.stack([(labels == c).sum(0) for c in range(4)])  # votes per class and voxel
    majority = one_hot.argmax(0)  # first maximum: lowest class wins ties, as class_argmax
    assert torch.equal(s.labels.long().reshape(-1), majority)
    assert torch.allclose(s.probabilities.reshape(4, -1), torch.softmax(noisy, 1).mean(0), atol=1e-6)


def test_aleatoric_samples_do_not_depend_on_the_threads():
    pred = Predictor(StubAleatoric(), patch_size=SHAPE, overlap=0.25)
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out.append(pred.sample(_image(), n=40, generator=torch.Generator().manual_seed(5)))
    finally:
        torch.set_num_threads(before)
    for s in out[1:]:
        assert np.array_equal(s.counts, out[0].counts) and torch.equal(s.probabilities, out[0].probabilities)


def test_aleatoric_counts_follow_the_sample_logits_distribution():
    net = StubAleatoric()
    pred = Predictor(net, patch_size=SHAPE, overlap=0.25)
    x, n = _image(), 3000
    f, sigma = pred.logits(x, sigma=True)
    fused = pred.sample(x, n=n, generator=torch.Generator().manual_seed(1), maps=False).counts.mean(0)
    ref = sample_logits(f[0], sigma[0], n, generator=torch.Generator().manual_seed(2)).argmax(1)
    ref = np.array([(ref == k).sum((1, 2, 3)).double().mean().item() for k in (1, 2, 3)])
    np.testing.assert_allclose(fused, ref, rtol=0.03)


def _fixed_multiplier(x, p):
    """Dropout factors that are the same for every sample and window: keep the even channels."""
    keep = (torch.arange(x.shape[1]) % 2 == 0).reshape(1, -1, *([1] * (x.ndim - 2))).expand_as(x)
    return keep.to(x.dtype) / (1 - p)


def test_epistemic_batched_equals_sequential_given_the_same_masks(monkeypatch):
    from physeg.models import sampling

    monkeypatch.setattr(sampling, "dropout_multiplier", _fixed_multiplier)
    net = _net("epistemic")
    x, n = _image(), 5
    s = Predictor(net, patch_size=8, overlap=0.25, copies=2, sw_batch_size=3).sample(x, THETA, n=n, seed=0)
    # the old loop: one sliding-window pass at a time, softmax accumulated per pass (same CPU layout)
    from physeg.models.layout import cpu_layout
    from physeg.models.sampling import mc_dropout

    probs, counts = 0, []
    with torch.no_grad(), mc_dropout(net), cpu_layout(net, device=torch.device("cpu")):
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


def test_dropout_multiplier_bits_are_independent_fair_coins_in_any_layout():
    from physeg.models.sampling import dropout_multiplier

    torch.manual_seed(0)
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        x = torch.randn(4, 8, 20, 20, 20).contiguous(memory_format=fmt)
        m = dropout_multiplier(x, 0.5)
        assert m.shape == x.shape and m.is_contiguous(memory_format=fmt)
        assert set(torch.unique(m).tolist()) == {0.0, 2.0}
        keep = (m > 0).permute(0, 2, 3, 4, 1).reshape(-1) if fmt is torch.channels_last_3d else (m > 0).reshape(-1)
        n = keep.numel()  # in memory order: element i is bit i % 8 of byte i // 8
        assert abs(keep.double().mean().item() - 0.5) < 4 * (0.25 / n) ** 0.5
        for lag in (1, 7, 8):  # neighbouring bits of one byte, and the same bit of the next byte
            both = (keep[:-lag] & keep[lag:]).double().mean().item()
            assert abs(both - 0.25) < 4 * (0.1875 / n) ** 0.5
        for bit in range(8):  # every bit position of the byte is a fair coin
            assert abs(keep[bit::8].double().mean().item() - 0.5) < 4 * (0.25 / (n / 8)) ** 0.5
    y = x[:, :, 1:]  # neither contiguous nor channels-last: factors laid out as the shape
    assert dropout_multiplier(y, 0.5).shape == y.shape
    odd = torch.ones(13)  # not a multiple of 8 elements
    assert dropout_multiplier(odd, 0.5).shape == (13,)
    # the module under mc_dropout computes x * factors
    drop = nn.Dropout(0.5).eval()
    from physeg.models.sampling import mc_dropout

    with mc_dropout(drop):
        torch.manual_seed(1)
        y = drop(x)
    torch.manual_seed(1)
    assert torch.equal(y, x * dropout_multiplier(x, 0.5))


def test_windows_per_call_change_speed_not_logits():
    # the channels-last group norm (physeg.models.layout) accumulates per channel in float32: the batch
    # composition moves the logits by float32 rounding (~1e-6 relative), nothing more
    net = _net()
    ref = Predictor(net, patch_size=8, overlap=0.25).logits(_image(), THETA)
    for sw in (1, 3, 100):
        out = Predictor(net, patch_size=8, overlap=0.25, sw_batch_size=sw).logits(_image(), THETA)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_cpu_layout_is_the_same_network_function():
    from physeg.models.layout import cpu_layout

    torch.manual_seed(0)
    net = build_network(NetworkConfig(channels=(8, 16), physics="early+late", sequence="MPRAGE",
                                      uncertainty="aleatoric")).eval()
    x, p = torch.rand(3, 1, 16, 16, 16), THETA[None].expand(3, 1)
    with torch.no_grad():
        ref = net.heads(x, p)
        ref64 = {k: v.double() for k, v in ref.items()}
        with cpu_layout(net, device=torch.device("cpu")):
            fast = net.heads(x, p)  # (the memory format convolutions choose depends on global backend flags)
        for k in ("logits", "sigma", "features"):
            torch.testing.assert_close(fast[k].double(), ref64[k], rtol=1e-4, atol=1e-4)
        # on exit the modules are as they were: the plain forward again, bit for bit
        assert torch.equal(net.heads(x, p)["logits"], ref["logits"])
        assert not any("forward" in vars(m) for m in net.modules())
        with cpu_layout(net, device=torch.device("meta")):  # other devices: untouched
            assert not any("forward" in vars(m) for m in net.modules())


def test_class_argmax_matches_argmax_first_maximum():
    x = torch.randint(0, 3, (2, 4, 5, 6)).float()  # many ties
    assert torch.equal(class_argmax(x), x.argmax(1))


def test_cpu_layout_gives_the_same_training_gradients():
    """Training steps run inside cpu_layout (physeg.training.loop): same loss and gradients up to rounding."""
    from physeg.models.layout import cpu_layout
    from physeg.models.losses import segmentation_loss

    torch.manual_seed(0)
    net = build_network(NetworkConfig(channels=(4, 8), physics="early+late", sequence="MPRAGE")).train()
    x, p = torch.rand(2, 1, 16, 16, 16), THETA[None].expand(2, 1)
    y = torch.randint(0, 4, (2, 16, 16, 16))

    def grads(fast: bool) -> tuple[float, list[torch.Tensor]]:
        net.zero_grad(set_to_none=True)
        if fast:
            with cpu_layout(net, device=torch.device("cpu")):
                loss = segmentation_loss(net.heads(x, p), y, strat_weight=1.0, dice_weight=1.0)["loss"]
        else:
            loss = segmentation_loss(net.heads(x, p), y, strat_weight=1.0, dice_weight=1.0)["loss"]
        loss.backward()
        return float(loss.detach()), [q.grad.clone() for q in net.parameters()]

    ref_loss, ref = grads(False)
    fast_loss, fast = grads(True)
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_stratification_loss_is_twice_the_mean_unbiased_variance_over_realisations():
    from physeg.models.losses import stratification_loss

    f = torch.randn(4, 3, 5, 5, 5).contiguous(memory_format=torch.channels_last_3d)
    expected = 2 * f.reshape(4, -1).var(dim=0, unbiased=True).mean()
    torch.testing.assert_close(stratification_loss(f), expected)
    # = the mean over pairs n < m of the mean squared difference (the paper's L2 between realisations)
    pairs = [((f[i] - f[j]) ** 2).mean() for i in range(4) for j in range(i + 1, 4)]
    torch.testing.assert_close(stratification_loss(f), torch.stack(pairs).mean())
    assert float(stratification_loss(f[:1])) == 0.0

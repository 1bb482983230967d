"""physeg.models.network: shapes, physics injection, dropout where stated (MONAI #4589/#4844), aleatoric samples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from physeg.models.network import (
    PhysicsBasicBlock,
    tile_concat,
    PHYSICS_MODES,
    NetworkConfig,
    build_network,
    describe,
)
from physeg.models.sampling import dropout_modules, mc_dropout, sample_logits
from monai.networks.blocks import UnetBasicBlock

CH = (4, 8, 16)


def net(physics="early+late", uncertainty="none"):
    torch.manual_seed(0)
    return build_network(NetworkConfig(channels=CH, physics=physics, uncertainty=uncertainty,
                                       sequence="MPRAGE" if physics != "none" else None))


def x_phys(b=2, s=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, s, s, s, generator=g), torch.rand(b, 1, generator=g)  # MPRAGE θ = [TI] in seconds


@pytest.mark.parametrize("physics", PHYSICS_MODES)
@pytest.mark.parametrize("uncertainty", ["none", "epistemic", "aleatoric"])
def test_shapes(physics, uncertainty):
    m = net(physics, uncertainty).eval()
    x, p = x_phys()
    out = m.heads(x, p)
    assert out["logits"].shape == (2, 4, 16, 16, 16)
    assert out["features"].shape == (2, CH[0], 16, 16, 16)
    assert ("sigma" in out) == (uncertainty == "aleatoric")
    logits, feats = m(x, p, return_features=True)
    assert torch.equal(logits, out["logits"]) and torch.equal(feats, out["features"])


def test_injection_points():
    early = net("early+late")
    late = net("late")
    # early: first down-sampling block reads c0 + 40 channels; late-only: c0
    assert early.encoder[1].total_in_channels == CH[0] + 40
    assert late.encoder[1].conv1.conv.in_channels == CH[0]
    for m in (early, late):
        assert m.penultimate.total_in_channels == CH[0] + 40
    assert net("none").penultimate.total_in_channels == CH[0]
    text = describe(early)
    assert "EARLY physics" in text and "LATE physics" in text


def test_physics_changes_output_and_is_required():
    x, p = x_phys()
    for mode in ("early+late", "late"):
        m = net(mode).eval()
        assert not torch.allclose(m(x, p), m(x, p + 1.0))
        with pytest.raises(ValueError):
            m(x)
    base = net("none").eval()
    assert torch.equal(base(x, p), base(x))  # physics ignored without a branch
    with pytest.raises(ValueError):
        build_network(NetworkConfig(channels=CH, physics="early+late", sequence=None))


def test_dropout_only_in_epistemic_and_everywhere_stated():
    assert dropout_modules(net("early+late", "none")) == []
    assert dropout_modules(net("none", "aleatoric")) == []
    m = net("early+late", "epistemic")
    drops = dropout_modules(m)
    L = len(CH)
    # 2 per encoder block, 3 per up block (transposed conv + 2 convs), 2 penultimate, input, physics branch
    assert len(drops) == 2 * L + 3 * (L - 1) + 2 + 1 + 1
    ps = sorted(d.p for d in drops)
    assert ps[0] == pytest.approx(0.05) and all(p == pytest.approx(0.5) for p in ps[1:])
    assert isinstance(m.input_dropout, nn.Dropout) and m.input_dropout.p == pytest.approx(0.05)
    # every conv of every block is followed by a dropout (MONAI ADN 'D')
    for block in [*m.encoder, m.penultimate]:
        assert isinstance(block.conv1.adn.D, nn.Dropout) and isinstance(block.conv2.adn.D, nn.Dropout)


def test_dropout_active_in_train_and_mc_not_in_eval():
    m = net("early+late", "epistemic")
    x, p = x_phys(1)
    m.train()
    assert not torch.allclose(m(x, p), m(x, p))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x, p), m(x, p))
        with mc_dropout(m):
            assert not m.training  # only dropout modules are in train mode
            assert all(d.training for d in dropout_modules(m))
            assert not any(mod.training for mod in m.modules() if not isinstance(mod, nn.modules.dropout._DropoutNd))
            a, b = m(x, p), m(x, p)
        assert not torch.allclose(a, b)
    assert not any(mod.training for mod in m.modules())  # restored
    assert torch.equal(m(x, p), m(x, p))


def test_aleatoric_sampling_one_forward_pass():
    m = net("early+late", "aleatoric").eval()
    x, p = x_phys(2)
    calls = []
    m.penultimate.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = m.heads(x, p)
    s = sample_logits(out["logits"], out["sigma"], 7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, 2, 4, 16, 16, 16)
    assert len(calls) == 1
    assert (out["sigma"] > 0).all()
    # samples = logits + sigma * eps with eps ~ N(0, 1) from the generator
    eps = torch.randn((7, *out["logits"].shape), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, out["logits"] + out["sigma"] * eps)
    assert "sigma" not in net("none").heads(x, None)


def test_sample_logits_function():
    logits = torch.zeros(1, 2, 3)
    sigma = torch.ones(1, 2, 3) * 2
    s = sample_logits(logits, sigma, 1000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (1000, 1, 2, 3)
    assert s.std().item() == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("stride", [1, 2])
def test_physics_block_equals_concatenation(stride):
    """The tiled-conv shortcut is exactly conv([x, tile(h)]) (borders included)."""
    torch.manual_seed(0)
    kw = dict(spatial_dims=3, kernel_size=3, norm_name="instance")
    fast = PhysicsBasicBlock(in_channels=3, physics_channels=5, out_channels=4, stride=stride, **kw)
    ref = UnetBasicBlock(in_channels=8, out_channels=4, stride=stride, **kw)
    with torch.no_grad():
        ref.conv1.conv.weight.copy_(torch.cat([fast.conv1.conv.weight, fast.physics_weight], 1))
        ref.conv2.conv.weight.copy_(fast.conv2.conv.weight)
    x = torch.randn(2, 3, 7, 6, 5)
    h = torch.randn(2, 5)
    torch.testing.assert_close(fast(x, h), ref(tile_concat(x, h)), rtol=1e-4, atol=1e-5)


def test_plans_round_trip_and_strict_reading(tmp_path):
    import json

    from physeg.models.plans import Plans, PlansError
    from physeg.models.registry import get_model_spec
    from physeg.profiles import get_profile
    from physeg.training.identity import make_plans

    plans = make_plans(get_model_spec("Phys-Strat-Aug-Aleatoric"), profile=get_profile("smoke"), sequence="SPGR")
    plans.write(tmp_path)
    back = Plans.read(tmp_path)
    assert back == plans and back.uses_physics and back.uncertainty == "aleatoric"
    assert back.network.n_physics_features == 6 and set(back.training_ranges) == {"TR", "TE", "FA"}
    raw = json.loads((tmp_path / "plans.json").read_text())
    with pytest.raises(PlansError, match="unknown keys \\['patchsize'\\]"):
        Plans.from_dict({**raw, "patchsize": 8})
    del raw["sw_overlap"]
    with pytest.raises(PlansError, match="missing keys \\['sw_overlap'\\]"):
        Plans.from_dict(raw)
    with pytest.raises(PlansError, match="no plans.json"):
        Plans.read(tmp_path / "elsewhere")

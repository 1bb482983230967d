"""physeg.evaluation.sigma: the σ a trained aleatoric model predicts, measured on a simulated image."""

import dataclasses
from types import SimpleNamespace

import torch

from physeg.evaluation.sigma import sigma_table
from physeg.models.network import build_network
from physeg.models.registry import get_model_spec
from physeg.profiles import get_profile
from physeg.training.identity import make_plans

PROF = dataclasses.replace(get_profile("smoke"), channels=(2, 4), patch_size=8)


def _folder(tmp_path, name, *, sigma_bias: float):
    folder = tmp_path / name
    folder.mkdir()
    plans = make_plans(get_model_spec(name), profile=PROF, sequence="MPRAGE")
    plans.write(folder)
    torch.manual_seed(0)
    net = build_network(plans.network)
    with torch.no_grad():
        if net.sigma_out is not None:
            last = net.sigma_out[0].conv.conv
            last.weight.zero_()
            last.bias.fill_(sigma_bias)  # softplus(b): a known σ everywhere
    torch.save(net.state_dict(), folder / "best.pt")
    return folder


def test_sigma_table_reads_the_sigma_head(tmp_path):
    g = torch.Generator().manual_seed(0)
    shape = (12, 12, 10)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[3:9, 3:9, 3:7] = True
    maps = torch.stack([mask.float() * 0.8, torch.full(shape, 1.0), torch.full(shape, 0.05)])
    maps = maps * (1 + 0.01 * torch.randn(maps.shape, generator=g))
    subject = SimpleNamespace(subject_id="sub-x", maps=maps, mask=mask)
    folders = {("Baseline-Aleatoric", "MPRAGE"): _folder(tmp_path, "Baseline-Aleatoric", sigma_bias=2.0),
               ("Baseline", "MPRAGE"): _folder(tmp_path, "Baseline", sigma_bias=0.0)}
    t = sigma_table(PROF, folders, [subject])
    assert list(t["model"]) == ["Baseline-Aleatoric"]  # deterministic models have no σ
    expected = float(torch.nn.functional.softplus(torch.tensor(2.0)))
    assert abs(t["sigma_brain"].iloc[0] - expected) < 1e-4 and abs(t["sigma_outside"].iloc[0] - expected) < 1e-4
    assert t["brain_share_sigma_gt_0.5"].iloc[0] == 1.0

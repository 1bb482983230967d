"""Test-time evaluation: the test grid, segmentation metrics, uncertainty samples (paper §3, §4).

Test grid
---------
Per sequence, fixed sets of acquisition parameters (the same for every test
subject and every model; seeded from the profile seed, the sequence and the
distribution, so a re-run gives the same grid):

* IoD: ``profile.n_test_iod`` draws from the training ranges;
* OoD: ``profile.n_test_ood`` parameter vectors outside the training ranges.
  MPRAGE: TI stratified over the OoD part of 0.1–2.0 s (one jittered point per
  equal-width stratum of [0.1, 0.6) ∪ (1.2, 2.0]) so the whole TI axis of the
  paper's Figure 3 is covered. SPGR: uniform on the OoD box minus the IoD box,
  then the first ``max(1, ceil(n/5))`` rows get FA ∈ [5°, 10°) so that the
  low-flip-angle images the paper singles out are always present.

Segmentation
------------
Every test image (subject × sequence × distribution × parameter set) is
segmented by every model of that sequence on the whole volume (sliding window,
:func:`physeg.inference.predictor.infer_volume`), scored against the subject's PGS:
one row per image and tissue in a long table (:data:`RESULT_COLUMNS`).

Uncertainty (paper §4.1)
------------------------
Per image, ``profile.n_uncertainty_samples`` volume samples from each variant:

* aleatoric: ONE sliding-window forward pass gives logits ``f`` and ``σ``;
  ``n`` noisy logit maps ``f + σ·ε`` → ``n`` segmentations (batched);
* epistemic: ``n`` MC-dropout forward passes, batched: the image is replicated
  ``n`` times along the batch axis and the windows of all copies go through the
  network together (each copy and window draws its own dropout masks).

Epistemic samples on the validation subjects (fixed IoD set) calibrate the
intervals (:mod:`physeg.evaluation.calibration`); test subjects are scored IoD and OoD.
Results are cached under :func:`physeg.paths.hashed_dir` so notebooks 05–06
reuse notebook 04's work.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from physeg.evaluation.metrics import TISSUES, batch_volumes_ml, cov_table, dice_per_tissue, label_counts, volumes_ml
from physeg.models.plans import PLANS_FILE, Plans
from physeg.profiles import Profile, get_profile

EVALUATION_VERSION = "2"
DISTRIBUTIONS: tuple[str, ...] = ("IoD", "OoD")
#: Images with FA below this (degrees) are the paper's "low flip angle" outliers.
LOW_FA_DEG: float = 10.0
LOW_FA_RANGE_DEG: tuple[float, float] = (5.0, 10.0)
RESULT_COLUMNS: tuple[str, ...] = (
    "subject", "sequence", "model", "distribution", "param_index", "params", "tissue",
    "dice", "volume_ml", "pgs_volume_ml",
)


def _seed(*parts: object) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


# --------------------------------------------------------------------------- grid
def _mprage_ood_ti(n: int, g: torch.Generator) -> torch.Tensor:
    from physeg.simulation import IOD_RANGES, OOD_RANGES

    lo, hi = OOD_RANGES["MPRAGE"]["TI"]
    ilo, ihi = IOD_RANGES["MPRAGE"]["TI"]
    a, b = ilo - lo, hi - ihi  # lengths of the two OoD pieces
    u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=g, dtype=torch.float64)) / n
    s = u * (a + b)
    ti = torch.where(s < a, lo + s, ihi + (s - a))
    # never exactly on the IoD border
    ti = torch.where((ti >= ilo) & (ti <= ihi), torch.full_like(ti, ihi + 1e-3), ti)
    return ti.unsqueeze(1)


def test_parameters(profile: Profile, sequence: str, distribution: str, *, n: int | None = None) -> torch.Tensor:
    """Fixed test parameters ``(n, P)`` (seconds, radians) of one sequence and distribution."""
    from physeg.simulation import sample_parameters

    dist = distribution.lower()
    if dist not in ("iod", "ood"):
        raise ValueError("distribution must be 'IoD' or 'OoD'")
    if n is None:
        n = profile.n_test_iod if dist == "iod" else profile.n_test_ood
    g = _generator(profile.seed, "test-grid", sequence, dist)
    if dist == "ood" and sequence == "MPRAGE":
        return _mprage_ood_ti(n, g).float()
    p = sample_parameters(sequence, n, distribution=dist, generator=g, dtype=torch.float64)
    if dist == "ood" and sequence == "SPGR" and n > 0:
        k = max(1, math.ceil(n / 5))
        lo, hi = LOW_FA_RANGE_DEG
        fa = lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)
        p[:k, 2] = torch.deg2rad(fa)
    return p.float()


def validation_parameters(profile: Profile, sequence: str) -> torch.Tensor:
    """Fixed IoD parameters of the validation subjects used for calibration."""
    from physeg.simulation import sample_parameters

    g = _generator(profile.seed, "calibration-grid", sequence)
    return sample_parameters(sequence, profile.n_val_realisations, distribution="iod", generator=g).float()


def parameter_columns(sequence: str, params: torch.Tensor) -> list[dict[str, Any]]:
    """Display columns per parameter vector: MPRAGE ``TI_s``; SPGR ``TR_ms, TE_ms, FA_deg, low_fa``; ``params``."""
    p = torch.as_tensor(params, dtype=torch.float64).cpu().numpy()
    rows = []
    for v in p:
        if sequence == "MPRAGE":
            rows.append({"TI_s": float(v[0]), "params": f"TI={v[0] * 1000:.0f} ms", "low_fa": False})
        else:
            fa = float(np.rad2deg(v[2]))
            rows.append({"TR_ms": float(v[0] * 1000), "TE_ms": float(v[1] * 1000), "FA_deg": fa,
                         "low_fa": fa < LOW_FA_DEG,
                         "params": f"TR={v[0] * 1000:.1f} ms, TE={v[1] * 1000:.1f} ms, FA={fa:.1f}°"})
    return rows


def test_grid(profile: Profile) -> pd.DataFrame:
    """The whole test grid as a table: sequence, distribution, param_index and parameter columns."""
    rows = []
    for s in profile.sequences:
        for d in DISTRIBUTIONS:
            for i, c in enumerate(parameter_columns(s, test_parameters(profile, s, d))):
                rows.append({"sequence": s, "distribution": d, "param_index": i, **c})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- models
def _folder_entries(trained: Any) -> list[Path]:
    if isinstance(trained, (str, Path)):
        return [Path(trained)]
    if isinstance(trained, Mapping):
        out: list[Path] = []
        for v in trained.values():
            out += _folder_entries(v)
        return out
    if isinstance(trained, Iterable):
        out = []
        for v in trained:
            out += _folder_entries(v)
        return out
    if hasattr(trained, "folder"):
        return [Path(trained.folder)]
    return []


def model_folders(trained: Any) -> dict[tuple[str, str], Path]:
    """``{(model name, sequence): folder}`` from whatever ``train_all`` returned (reads ``plans.json``)."""
    if isinstance(trained, Mapping) and "folders" in trained:
        trained = trained["folders"]
    out = {}
    for f in _folder_entries(trained):
        if (f / PLANS_FILE).exists():
            plans = Plans.read(f)
            out[(plans.name, plans.sequence)] = f
    return out


def train_models(profile: Profile) -> dict[tuple[str, str], Path]:
    """Train (or reuse cached) models of the profile: ``{(name, sequence): folder}``."""
    from physeg.training.orchestrate import train_all

    return model_folders(train_all(profile))


def load_models(folders: Mapping[tuple[str, str], Path], names: Iterable[str] | None = None, device="cpu"):
    """``{(name, sequence): model in eval mode}`` for the requested names (default all)."""
    from physeg.training.loop import load_model

    names = set(names) if names is not None else None
    return {k: load_model(f, device=device)[0] for k, f in folders.items() if names is None or k[0] in names}


def _uses_physics(model) -> bool:
    net = model.module if hasattr(model, "module") else model
    cfg = getattr(net, "config", None)
    return cfg is None or getattr(cfg, "physics", "none") != "none"


# --------------------------------------------------------------------------- inference
def _simulate(subject, sequence: str, params: torch.Tensor):
    from physeg.simulation import simulate

    images = simulate(subject.maps, sequence=sequence, params=params, mask=subject.mask)
    return images, params.float()


@torch.no_grad()
def segment(model, image: torch.Tensor, physics: torch.Tensor | None, *, profile: Profile) -> torch.Tensor:
    """Deterministic whole-volume segmentation ``(X, Y, Z)`` int64 (model in eval mode)."""
    from physeg.inference.predictor import infer_volume

    model.eval()
    phys = physics if _uses_physics(model) else None
    logits = infer_volume(model, image, phys, profile=profile)
    return logits[0].argmax(0).cpu()


def class_argmax(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(1)`` for logits ``(B, C, *S)`` by a running maximum over the few classes.

    Same result (first maximum wins ties) but several times faster on CPU than a
    reduction over the strided class axis, and no copy of ``x``.
    """
    best = x[:, 0].clone()
    idx = torch.zeros(best.shape, dtype=torch.int64, device=x.device)
    for c in range(1, x.shape[1]):
        xc = x[:, c]
        m = xc > best
        best = torch.maximum(best, xc)
        idx.masked_fill_(m, c)
    return idx


def _chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(n, a + size)


def _chunk_size(image: torch.Tensor, requested: int | None) -> int:
    if requested:
        return requested
    voxels = int(np.prod(image.shape[-3:]))
    return max(1, min(64, int(2.5e8 // (voxels * 4 * 4))))  # ≤ ~1 GB of float32 logits per chunk


@torch.no_grad()
def aleatoric_volumes(
    model, image: torch.Tensor, physics: torch.Tensor | None, *, n: int, voxel_volume_ml: float,
    profile: Profile, generator: torch.Generator | None = None, chunk: int | None = None,
    tissues: Mapping[str, int] = TISSUES,
) -> np.ndarray:
    """``n`` aleatoric volume samples ``(n, n_tissues)`` from ONE forward pass (+ noisy logits)."""
    from physeg.inference.predictor import infer_volume

    model.eval()
    phys = physics if _uses_physics(model) else None
    logits, sigma = infer_volume(model, image, phys, profile=profile, return_sigma=True)
    out = []
    for a, b in _chunks(n, _chunk_size(image, chunk)):
        counts = noisy_label_counts(logits[0], sigma[0], b - a, generator=generator,
                                    labels=tuple(tissues.values()))
        out.append(counts.cpu().numpy().astype(np.float64) * float(voxel_volume_ml))
    return np.concatenate(out)


@torch.no_grad()
def noisy_label_counts(
    logits: torch.Tensor, sigma: torch.Tensor, n: int, *, generator: torch.Generator | None = None,
    labels: Sequence[int] = tuple(TISSUES.values()),
) -> torch.Tensor:
    r"""Voxel counts of ``labels`` in ``n`` aleatoric segmentations ``argmax_c (f_c + σ_c ε_c)``.

    Same distribution as :func:`physeg.models.network.sample_logits` followed by an
    argmax, fused per class: the noisy logits of one class at a time go into a
    running maximum, so the ``(n, C, *S)`` tensor is never built (about 2× faster
    on CPU, C× less memory). ``logits``, ``sigma``: ``(C, *S)``. Returns ``(n, len(labels))``.
    """
    C = logits.shape[0]
    f = logits.reshape(C, 1, -1)
    sd = sigma.reshape(C, 1, -1)
    V = f.shape[-1]
    buf = torch.empty((n, V), dtype=f.dtype, device=f.device)
    best = torch.empty_like(buf)
    idx = torch.zeros((n, V), dtype=torch.uint8, device=f.device)
    for c in range(C):
        if generator is not None and generator.device != f.device:
            buf.copy_(torch.randn((n, V), generator=generator, dtype=f.dtype))
        else:
            torch.randn((n, V), generator=generator, out=buf)
        buf.mul_(sd[c]).add_(f[c])
        if c == 0:
            best.copy_(buf)
        else:
            idx.masked_fill_(buf > best, c)
            torch.maximum(best, buf, out=best)
    return torch.stack([(idx == lab).sum(1) for lab in labels], 1)


@torch.no_grad()
def epistemic_volumes(
    model, image: torch.Tensor, physics: torch.Tensor | None, *, n: int, voxel_volume_ml: float,
    profile: Profile, chunk: int | None = None, sw_batch_size: int | None = None,
    tissues: Mapping[str, int] = TISSUES,
) -> np.ndarray:
    """``n`` MC-dropout volume samples ``(n, n_tissues)``; copies of the image are batched."""
    from monai.inferers import sliding_window_inference

    from physeg.models.sampling import mc_dropout

    net = model.module if hasattr(model, "module") else model
    device = next(net.parameters()).device
    phys = None
    if _uses_physics(model) and physics is not None:
        phys = torch.as_tensor(physics, dtype=torch.float32).reshape(1, -1).to(device)
    img = image if image.ndim == 5 else image.unsqueeze(0)
    img = img.to(device, torch.float32)
    roi = (profile.patch_size,) * 3
    out = []
    if chunk is None and device.type == "cpu":
        chunk = min(n, 8)  # big batches do not help on CPU (measured), they only cost memory
    with mc_dropout(net):
        for a, b in _chunks(n, _chunk_size(img, chunk)):
            k = b - a
            batch = img.expand(k, *img.shape[1:])

            def predictor(w, phys=phys):
                p = None if phys is None else phys.expand(w.shape[0], -1)
                return net.heads(w, p)["logits"].float()

            logits = sliding_window_inference(
                batch, roi_size=roi, sw_batch_size=sw_batch_size or (8 if device.type == "cpu" else max(4, k)),
                predictor=predictor,
                overlap=profile.sw_overlap, mode="gaussian",
            )
            out.append(batch_volumes_ml(class_argmax(logits).cpu(), voxel_volume_ml, tissues))
    return np.concatenate(out)


# --------------------------------------------------------------------------- segmentation evaluation
def evaluate_segmentation(
    profile: Profile,
    models: Mapping[tuple[str, str], Any],
    subjects: Sequence[Any],
    *,
    examples: bool = True,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Segment the test grid with every model; returns ``(results, examples)``.

    ``results``: long table, one row per image × tissue with :data:`RESULT_COLUMNS`
    plus the parameter columns. ``examples``: Figure 2 material for the first
    subject: per sequence one OoD image (lowest TI / a FA < 10° image), the PGS
    and every model's segmentation, as numpy arrays.
    """
    rows, ex = [], {}
    for sequence in profile.sequences:
        seq_models = {name: m for (name, s), m in models.items() if s == sequence}
        if not seq_models:
            continue
        grids = {d: test_parameters(profile, sequence, d) for d in DISTRIBUTIONS}
        cols = {d: parameter_columns(sequence, grids[d]) for d in DISTRIBUTIONS}
        for si, subject in enumerate(subjects):
            pgs = subject.pgs
            pgs_vol = volumes_ml(pgs, subject.voxel_volume_ml)
            for d in DISTRIBUTIONS:
                images, feats = _simulate(subject, sequence, grids[d])
                ex_idx = None
                if examples and si == 0 and d == "OoD" and len(grids[d]):
                    ex_idx = int(np.argmin(grids[d][:, 0].numpy())) if sequence == "MPRAGE" else 0
                    ex[sequence] = {"subject": subject.subject_id, "params": cols[d][ex_idx]["params"],
                                    "image": images[ex_idx, 0].numpy(), "pgs": pgs.numpy(), "seg": {}}
                for name, model in seq_models.items():
                    for i in range(images.shape[0]):
                        t0 = time.perf_counter()
                        seg = segment(model, images[i], feats[i], profile=profile)
                        dt = time.perf_counter() - t0
                        if i == ex_idx:
                            ex[sequence]["seg"][name] = seg.numpy()
                        dsc = dice_per_tissue(seg, pgs)
                        vol = volumes_ml(seg, subject.voxel_volume_ml)
                        for t in TISSUES:
                            rows.append({
                                "subject": subject.subject_id, "sequence": sequence, "model": name,
                                "distribution": d, "param_index": i, **cols[d][i], "tissue": t,
                                "dice": dsc[t], "volume_ml": vol[t],
                                "pgs_volume_ml": pgs_vol[t], "seconds": dt,
                            })
                if progress:
                    print(f"{sequence} {subject.subject_id} {d}: {len(seq_models)} models × {images.shape[0]} images")
    return pd.DataFrame(rows), ex


# --------------------------------------------------------------------------- uncertainty evaluation
def uncertainty_subset(n_images: int, n_selected: int | None) -> list[int]:
    """Indices of the test-grid images that get uncertainty samples.

    ``None`` (or ``n_selected >= n_images``) keeps every image. Otherwise the
    indices are evenly spaced over the grid and always include 0: the grid puts
    its FA < 10° SPGR images first, so the Figure-3 outliers stay in the subset.
    """
    if n_selected is None or n_selected >= n_images:
        return list(range(n_images))
    if n_selected < 1:
        raise ValueError(f"n_uncertainty_images must be >= 1 or None, got {n_selected}")
    return sorted({int(round(i)) for i in np.linspace(0, n_images - 1, n_selected)})


def uncertainty_samples(
    profile: Profile,
    models: Mapping[tuple[str, str], Any],
    subjects: Sequence[Any],
    *,
    split: str,
    n: int | None = None,
    bases: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Volume samples of every image: one row per image × tissue with ``samples`` arrays.

    ``models`` holds the uncertainty variants ``"<base>-Aleatoric"`` and
    ``"<base>-Epistemic"``. ``split="test"``: the IoD and OoD test grids;
    ``split="val"``: the validation IoD set. Columns: ``subject, split, sequence,
    model (base name), distribution, param_index, parameter columns, tissue,
    pgs_volume_ml, aleatoric, epistemic`` (arrays of ``n`` volumes, or None),
    ``t_aleatoric_s, t_epistemic_s`` (seconds per image).
    """
    n = n or profile.n_uncertainty_samples
    bases = list(bases or profile.uncertainty_models)
    tissue_names = list(TISSUES)
    rows = []
    for sequence in profile.sequences:
        grids = ({d: test_parameters(profile, sequence, d) for d in DISTRIBUTIONS} if split == "test"
                 else {"IoD": validation_parameters(profile, sequence)})
        if split == "test":
            grids = {d: params[uncertainty_subset(params.shape[0], profile.n_uncertainty_images)]
                     for d, params in grids.items()}
        for subject in subjects:
            counts = label_counts(subject.pgs)
            for d, params in grids.items():
                cols = parameter_columns(sequence, params)
                images, feats = _simulate(subject, sequence, params)
                for base in bases:
                    ale = models.get((f"{base}-Aleatoric", sequence))
                    epi = models.get((f"{base}-Epistemic", sequence))
                    if ale is None and epi is None:
                        continue
                    for i in range(images.shape[0]):
                        g = _generator(profile.seed, "aleatoric", split, sequence, subject.subject_id, d, base, i)
                        va = ve = None
                        t0 = time.perf_counter()
                        if ale is not None:
                            va = aleatoric_volumes(ale, images[i], feats[i], n=n, generator=g, profile=profile,
                                                   voxel_volume_ml=subject.voxel_volume_ml)
                        t1 = time.perf_counter()
                        if epi is not None:
                            torch.manual_seed(_seed(profile.seed, "epistemic", split, sequence,
                                                    subject.subject_id, d, base, i) % (2**63))
                            ve = epistemic_volumes(epi, images[i], feats[i], n=n, profile=profile,
                                                   voxel_volume_ml=subject.voxel_volume_ml)
                        t2 = time.perf_counter()
                        for j, t in enumerate(tissue_names):
                            rows.append({
                                "subject": subject.subject_id, "split": split, "sequence": sequence,
                                "model": base, "distribution": d, "param_index": i, **cols[i], "tissue": t,
                                "pgs_volume_ml": counts[t] * subject.voxel_volume_ml,
                                "aleatoric": None if va is None else va[:, j],
                                "epistemic": None if ve is None else ve[:, j],
                                "t_aleatoric_s": t1 - t0, "t_epistemic_s": t2 - t1,
                            })
    return pd.DataFrame(rows)


def score_uncertainty(val: pd.DataFrame, test: pd.DataFrame, levels=None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Calibrate on ``val`` and score ``test`` (both from :func:`uncertainty_samples`).

    Returns ``(per_image, coverage, calibration)``:

    * ``per_image``: the test rows without the sample arrays, plus ``ale_mean,
      ale_var, epi_mean, epi_median, epi_var`` (ddof=1), ``var_aleatoric``,
      ``var_epistemic`` (aliases), ``iqr_raw``, ``iqr_cal``, ``lo50_cal``, ``hi50_cal``,
      ``covered50_raw``, ``covered50_cal`` and ``abs_error`` = |epistemic median − PGS|;
    * ``coverage``: per model × sequence × tissue × distribution × level, raw
      and calibrated coverage and mean width (:func:`physeg.evaluation.calibration.interval_table`);
    * ``calibration``: the fitted percentiles per model × sequence × tissue.
    """
    from physeg.evaluation import calibration as un

    levels = tuple(levels or un.DEFAULT_LEVELS)
    keys = ["model", "sequence", "tissue"]
    per_rows, cov_rows, cal_rows = [], [], []
    for key, g in test.groupby(keys, sort=False, observed=True):
        v = val
        for c, k in zip(keys, key):
            v = v[v[c] == k]
        has_epi = g["epistemic"].map(lambda a: a is not None).all()
        has_ale = g["aleatoric"].map(lambda a: a is not None).all()
        cal = None
        if has_epi and len(v) and v["epistemic"].map(lambda a: a is not None).all():
            cal = un.fit_calibration(np.stack(v["epistemic"]), v["pgs_volume_ml"].to_numpy(), levels)
            cal_rows.append(cal.to_frame().assign(**dict(zip(keys, key))))
        out = g.drop(columns=["aleatoric", "epistemic"]).copy()
        if has_ale:
            a = np.stack(g["aleatoric"])
            out["ale_mean"], out["ale_var"] = a.mean(1), a.var(1, ddof=1)
        else:
            out["ale_mean"] = out["ale_var"] = np.nan
        if has_epi:
            e = np.stack(g["epistemic"])
            truth = g["pgs_volume_ml"].to_numpy()
            out["epi_mean"], out["epi_median"], out["epi_var"] = e.mean(1), np.median(e, 1), e.var(1, ddof=1)
            lo, hi = un.uncalibrated_interval(e, 0.5)
            out["iqr_raw"], out["covered50_raw"] = hi - lo, (truth >= lo) & (truth <= hi)
            if cal is not None:
                lo, hi = cal.interval(e, 0.5)
                out["lo50_cal"], out["hi50_cal"], out["iqr_cal"] = lo, hi, hi - lo
                out["covered50_cal"] = (truth >= lo) & (truth <= hi)
            out["abs_error"] = np.abs(out["epi_median"] - truth)
            for d, gd in g.groupby("distribution", observed=True):
                tab = un.interval_table(np.stack(gd["epistemic"]), gd["pgs_volume_ml"].to_numpy(), cal, levels)
                cov_rows.append(tab.assign(**dict(zip(keys, key)), distribution=d))
        else:
            out["epi_mean"] = out["epi_median"] = out["epi_var"] = np.nan
        out["var_aleatoric"], out["var_epistemic"] = out["ale_var"], out["epi_var"]
        per_rows.append(out)
    per = pd.concat(per_rows, ignore_index=True) if per_rows else pd.DataFrame()
    cov = pd.concat(cov_rows, ignore_index=True) if cov_rows else pd.DataFrame()
    cal = pd.concat(cal_rows, ignore_index=True) if cal_rows else pd.DataFrame()
    return per, cov, cal


# --------------------------------------------------------------------------- cached runs
@dataclass
class EvaluationResults:
    """Segmentation results of one profile (cached)."""

    profile: str
    results: pd.DataFrame
    cov: pd.DataFrame
    grid: pd.DataFrame
    examples: dict = field(repr=False, default_factory=dict)
    folder: Path | None = None
    wall_s: float = float("nan")

    def tables(self) -> pd.DataFrame:
        """Our Tables 1–2 (long, the schema of the paper's)."""
        from physeg.evaluation.paper_tables import our_tables

        return our_tables(self.results, self.cov)


@dataclass
class UncertaintyResults:
    """Uncertainty results of one profile (cached)."""

    profile: str
    samples: pd.DataFrame  # test rows with sample arrays
    val_samples: pd.DataFrame
    per_image: pd.DataFrame
    coverage: pd.DataFrame
    calibration: pd.DataFrame
    folder: Path | None = None
    wall_s: float = float("nan")


def _cache_config(kind: str, profile: Profile, folders: Mapping[tuple[str, str], Path]) -> dict:
    return {"kind": kind, "evaluation_version": EVALUATION_VERSION, "profile": profile.to_dict(),
            "models": sorted(f"{n}/{s}/{Path(f).name}" for (n, s), f in folders.items())}


def _load_subjects(profile: Profile, split: str):
    from physeg.data import build_cohort, cohort_split, load_subject

    root = build_cohort(profile)
    return [load_subject(root, sid) for sid in cohort_split(profile)[split]]


def run_evaluation(profile: Profile | str, *, folders: Mapping | None = None, force: bool = False,
                   progress: bool = False) -> EvaluationResults:
    """Segmentation evaluation of the profile's ablations on the test grid, cached.

    Trains (or reuses) the models via :func:`physeg.training.orchestrate.train_all` when
    ``folders`` is not given.
    """
    from physeg.paths import hashed_dir

    profile = get_profile(profile) if isinstance(profile, str) else profile
    folders = dict(folders) if folders is not None else train_models(profile)
    folders = {k: v for k, v in folders.items() if k[0] in profile.ablations}
    out = hashed_dir("evaluation", _cache_config("segmentation", profile, folders))
    files = {k: out / f"{k}.pkl" for k in ("results", "cov", "grid", "examples", "meta")}
    if not force and all(f.exists() for f in files.values()):
        meta = pd.read_pickle(files["meta"])
        return EvaluationResults(profile.name, pd.read_pickle(files["results"]), pd.read_pickle(files["cov"]),
                                 pd.read_pickle(files["grid"]), pd.read_pickle(files["examples"]), out,
                                 meta.get("wall_s", float("nan")))
    t0 = time.perf_counter()
    models = load_models(folders)
    results, ex = evaluate_segmentation(profile, models, _load_subjects(profile, "test"), progress=progress)
    cov = cov_table(results)
    grid = test_grid(profile)
    wall = time.perf_counter() - t0
    for name, obj in (("results", results), ("cov", cov), ("grid", grid), ("examples", ex),
                      ("meta", {"wall_s": wall})):
        pd.to_pickle(obj, files[name])
    results.to_csv(out / "results.csv", index=False)
    cov.to_csv(out / "cov.csv", index=False)
    return EvaluationResults(profile.name, results, cov, grid, ex, out, wall)


def run_uncertainty(profile: Profile | str, *, folders: Mapping | None = None, force: bool = False,
                    n: int | None = None) -> UncertaintyResults:
    """Uncertainty evaluation (samples on val and test subjects, calibration, scores), cached."""
    from physeg.paths import hashed_dir

    profile = get_profile(profile) if isinstance(profile, str) else profile
    folders = dict(folders) if folders is not None else train_models(profile)
    wanted = {f"{b}-{v}" for b in profile.uncertainty_models for v in ("Aleatoric", "Epistemic")}
    folders = {k: v for k, v in folders.items() if k[0] in wanted}
    n = n or profile.n_uncertainty_samples
    cfg = _cache_config("uncertainty", profile, folders) | {"n_samples": n}
    out = hashed_dir("evaluation", cfg)
    f = out / "uncertainty_samples.pkl"
    if not force and f.exists():
        d = pd.read_pickle(f)  # only the (expensive) samples are cached; scoring is recomputed
    else:
        t0 = time.perf_counter()
        models = load_models(folders)
        val = uncertainty_samples(profile, models, _load_subjects(profile, "val"), split="val", n=n)
        test = uncertainty_samples(profile, models, _load_subjects(profile, "test"), split="test", n=n)
        d = {"samples": test, "val_samples": val, "wall_s": time.perf_counter() - t0}
        pd.to_pickle(d, f)
    if d["samples"].empty:
        per, cov, cal = pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    else:
        per, cov, cal = score_uncertainty(d["val_samples"], d["samples"])
        per.to_csv(out / "uncertainty_per_image.csv", index=False)
    d = {**d, "per_image": per, "coverage": cov, "calibration": cal}
    return UncertaintyResults(profile.name, **d, folder=out)

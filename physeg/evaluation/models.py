"""The trained models of an evaluation: model folders (``plans.json``), training, loading.

A model folder is identified by the :class:`~physeg.models.plans.Plans` it
holds (model name and sequence), never by its file name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from physeg.conventions import TISSUES
from physeg.models.plans import PLANS_FILE, Plans
from physeg.profiles import Profile


def _folder_entries(trained: Any) -> list[Path]:
    """Every folder in nested paths, mappings, iterables or objects with a ``folder``."""
    if isinstance(trained, (str, Path)):
        return [Path(trained)]
    if isinstance(trained, (Mapping, Iterable)):
        return [f for v in (trained.values() if isinstance(trained, Mapping) else trained)
                for f in _folder_entries(v)]
    return [Path(trained.folder)] if hasattr(trained, "folder") else []


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


def load_models(folders: Mapping[tuple[str, str], Path], *, names: Iterable[str] | None = None,
                device: str = "cpu") -> dict[tuple[str, str], Any]:
    """``{(name, sequence): model in eval mode}`` for the requested names (default all)."""
    from physeg.training.checkpoint import load_model

    names = set(names) if names is not None else None
    return {k: load_model(f, device=device)[0] for k, f in folders.items() if names is None or k[0] in names}


#: How far an uncertainty variant's validation Dice may fall below its deterministic parent's.
PARENT_TOLERANCE: float = 0.03
_VARIANT_SUFFIXES: tuple[str, ...] = ("-Epistemic", "-Aleatoric")


def variants_against_parents(summary, *, tolerance: float = PARENT_TOLERANCE):
    """Validation Dice of each uncertainty variant beside its deterministic parent's (same sequence, seed).

    ``summary``: one row per trained model (``model, sequence, seed, val_dice_GM, val_dice_WM,
    val_dice_CSF``, as notebook 03's training summary or a frozen ``models.csv``). Epistemic
    models are validated as they are used, by the vote of Monte-Carlo dropout samples. Returns
    one row per variant × sequence × seed with both models' Dice, the differences
    (variant − parent) and ``within`` (no tissue more than ``tolerance`` below the parent).
    """
    import pandas as pd

    tissues = ("GM", "WM", "CSF")
    dice = [f"val_dice_{t}" for t in tissues]
    keyed = summary.set_index(["model", "sequence", "seed"])[dice]
    rows = []
    for (model, sequence, seed), row in keyed.iterrows():
        parent = next((model.removesuffix(s) for s in _VARIANT_SUFFIXES if model.endswith(s)), None)
        if parent is None or (parent, sequence, seed) not in keyed.index:
            continue
        ref = keyed.loc[(parent, sequence, seed)]
        diff = {f"diff_{t}": float(row[c] - ref[c]) for t, c in zip(tissues, dice)}
        rows.append({"model": model, "sequence": sequence, "seed": seed,
                     **{f"{t}": float(row[c]) for t, c in zip(tissues, dice)},
                     **{f"parent_{t}": float(ref[c]) for t, c in zip(tissues, dice)},
                     **diff, "within": all(d >= -tolerance for d in diff.values())})
    return pd.DataFrame(rows)


def mc_mean_against_parents(per_image, *, tolerance: float = PARENT_TOLERANCE):
    """Test Dice of each epistemic variant's Monte-Carlo mean map beside its parent's map of the same images.

    ``per_image``: the uncertainty evaluation's per-image table (columns ``epi_dice``, ``parent_dice``,
    from :mod:`physeg.evaluation.volume_samples`; an optional ``seed``). One row per model ×
    sequence × distribution (× seed): the mean Dice of both per tissue, their differences
    (``diff_<tissue>``, variant − parent) and ``within`` (no tissue more than ``tolerance`` below).
    Empty when the table has no such columns (results frozen before they existed).
    """
    import pandas as pd

    if per_image is None or "epi_dice" not in per_image or per_image["parent_dice"].isna().all():
        return pd.DataFrame()
    keys = ["model", "sequence", "distribution"] + (["seed"] if "seed" in per_image else [])
    means = per_image.groupby([*keys, "tissue"])[["epi_dice", "parent_dice"]].mean().unstack("tissue")
    out = pd.DataFrame(index=means.index)
    for t in TISSUES:
        out[t], out[f"parent_{t}"] = means[("epi_dice", t)], means[("parent_dice", t)]
        out[f"diff_{t}"] = out[t] - out[f"parent_{t}"]
    out["within"] = (out[[f"diff_{t}" for t in TISSUES]] >= -tolerance).all(axis=1)
    out["n_images"] = per_image.groupby(keys)["param_index"].size() // len(TISSUES)
    return out.reset_index()

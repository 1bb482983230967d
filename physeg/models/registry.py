"""The ablation registry: model name → what changes (paper §4, §4.1).

=====================  ============  ============  ==========  =====  ===========
name                   physics       data          batches     strat  uncertainty
=====================  ============  ============  ==========  =====  ===========
Baseline               none          pregenerated  mixed       no     none
Phys-Base              early+late    pregenerated  mixed       no     none
Phys-Strat             early+late    pregenerated  stratified  yes    none
Phys-Strat-Aug         early+late    onthefly      stratified  yes    none
Baseline-Epistemic     as Baseline, dropout p (input 0.05), MC dropout at test; p = the profile's
                       epistemic_dropout (the paper's 0.5; 0.1 on the CPU profiles)
Baseline-Aleatoric     as Baseline, σ head, loss over T noisy logit passes
Phys-Strat-Aug-Epi…    as Phys-Strat-Aug, epistemic
Phys-Strat-Aug-Ale…    as Phys-Strat-Aug, aleatoric
Phys-Base-Late         late       pregenerated  mixed       no     none   (Borges 2019; not run by the paper)
=====================  ============  ============  ==========  =====  ===========

"pregenerated": ``profile.training.n_pregenerated`` realisations per training subject,
parameters drawn once from the IoD range with a fixed seed; "onthefly": new
IoD parameters for every batch (the simulation layer as augmentation).
"mixed": each item a random subject, realisation and patch; "stratified":
``batch_size`` realisations of ONE subject at ONE patch location.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from physeg.profiles import Profile


@dataclass(frozen=True)
class ModelSpec:
    """Switches of one ablation."""

    name: str
    physics: str = "none"  # "none" | "early+late" | "late"
    data: str = "pregenerated"  # "pregenerated" | "onthefly"
    batches: str = "mixed"  # "mixed" | "stratified"
    strat_loss: bool = False
    uncertainty: str = "none"  # "none" | "epistemic" | "aleatoric"
    #: Model whose trained weights (``best.pt``, same profile, sequence and seed)
    #: initialise this one. Epistemic variants start from their deterministic
    #: model and are fine-tuned with dropout on: dropout 0.5 after every
    #: convolution of a small network trained from scratch on a CPU budget stays
    #: near chance, while the same dropout on converged weights keeps their
    #: accuracy and adds the Monte-Carlo spread (paper §2.4 trains from scratch on a GPU).
    init_from: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_BASE: dict[str, ModelSpec] = {
    "Baseline": ModelSpec("Baseline"),
    "Phys-Base": ModelSpec("Phys-Base", physics="early+late"),
    "Phys-Strat": ModelSpec("Phys-Strat", physics="early+late", batches="stratified", strat_loss=True),
    "Phys-Strat-Aug": ModelSpec(
        "Phys-Strat-Aug", physics="early+late", data="onthefly", batches="stratified", strat_loss=True
    ),
    "Phys-Base-Late": ModelSpec("Phys-Base-Late", physics="late"),
}

UNCERTAINTY_VARIANTS: tuple[str, ...] = ("Epistemic", "Aleatoric")


def _registry() -> dict[str, ModelSpec]:
    reg = dict(_BASE)
    for base in ("Baseline", "Phys-Strat-Aug"):
        for var in UNCERTAINTY_VARIANTS:
            name = f"{base}-{var}"
            reg[name] = replace(_BASE[base], name=name, uncertainty=var.lower(),
                                init_from=base if var == "Epistemic" else None)
    return reg


MODELS: dict[str, ModelSpec] = _registry()


def get_model_spec(name: str) -> ModelSpec:
    """Spec by name (see the table in the module docstring)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def uncertainty_model_name(base: str, variant: str) -> str:
    """``("Baseline", "epistemic") -> "Baseline-Epistemic"``."""
    return f"{base}-{variant.capitalize()}"


def profile_models(profile: Profile) -> list[str]:
    """Models a profile asks for: its ablations, then epistemic and aleatoric
    variants of its ``uncertainty_models`` (each trained per sequence)."""
    names = list(profile.ablations)
    for base in profile.uncertainty_models:
        names += [uncertainty_model_name(base, v) for v in UNCERTAINTY_VARIANTS]
    return names

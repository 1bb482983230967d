"""Compute profiles: one configuration, several sizes.

A :class:`Profile` is resolved once, at the edge -- the notebook parameter
cell, a CLI flag (``--profile``), the papermill runner -- by
:func:`get_profile`, and passed down typed: library functions take a
``Profile`` (or its :class:`TrainingConfig`), never a name. The environment
variable ``PHYSEG_PROFILE`` sets the default name.

``smoke``
    CI on 2 CPU cores in minutes: checks that the whole chain runs, not the science.
``demo``
    The README's default on a laptop CPU: coarse volumes, two seeds, about 40 min.
``paper``
    The paper's settings (§2.1, §4): 1 mm maps, 128³ patches, batch 4, Adam
    lr 1e-4, early stopping after 7 epochs; needs a GPU.

:meth:`Profile.to_dict` (with the training settings nested under
``"training"``) is written next to results; the model folders hash only the
training-relevant part (:func:`physeg.training.identity.make_plans`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

SEQUENCES: tuple[str, ...] = ("MPRAGE", "SPGR")

#: The four ablations of the paper (§4) and the uncertainty variants (§4.1).
ABLATIONS: tuple[str, ...] = ("Baseline", "Phys-Base", "Phys-Strat", "Phys-Strat-Aug")
UNCERTAINTY_MODELS: tuple[str, ...] = ("Baseline", "Phys-Strat-Aug")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimiser, budget, data and loss weights of the training stage (paper §2.1-§2.3).

    Every field shapes the weights, so every field is recorded in the model's
    ``plans.json`` and hashed into its folder name.
    """

    #: Realisations per batch (= N realisations of one subject in stratified batches, §2.2).
    batch_size: int
    #: Adam learning rate.
    learning_rate: float
    #: Upper bound on the number of epochs.
    max_epochs: int
    #: Optimiser steps per epoch (an "epoch" over the training subjects).
    steps_per_epoch: int
    #: Early stopping patience in epochs (§2.1).
    patience: int
    #: Fixed realisations per training subject for the pre-generated ablations (§4).
    n_pregenerated: int
    #: Noisy logit passes T in the aleatoric loss (§2.4).
    aleatoric_passes: int
    #: Stratification loss weight λ (§2.2).
    strat_weight: float
    #: Weight of the soft Dice term added to the cross-entropy (0: the paper's loss).
    dice_weight: float = 0.0
    #: Learning-rate schedule over the run's ``max_epochs × steps_per_epoch`` steps:
    #: ``"constant"`` (the paper's Adam), ``"poly"`` (nnU-Net's (1-u)^0.9) or ``"cosine"``,
    #: after a linear warm-up over ``warmup_fraction`` of the steps
    #: (:mod:`physeg.training.schedule`).
    lr_schedule: str = "constant"
    warmup_fraction: float = 0.0
    #: ``"auto"``: bf16 autocast where the hardware computes bf16 natively (CUDA,
    #: CPUs with avx512_bf16/amx), else float32; ``"fp32"`` or ``"bf16"`` to force
    #: (:mod:`physeg.training.precision`). The precision that ran is in ``finished.json``.
    precision: str = "auto"
    #: Form of the aleatoric loss (:func:`physeg.models.losses.aleatoric_loss`):
    #: ``"kendall-gal"`` (−log of the mean soft-max probability over the draws, eq. 4 as intended).
    aleatoric_form: str = "kendall-gal"
    #: Epistemic models are selected as they are used: validation segments each
    #: image by the majority vote of this many Monte-Carlo dropout samples.
    val_mc_samples: int = 4
    #: Validate every this many epochs (and after the last); the early-stopping
    #: ``patience`` counts validations. Whole-volume validation costs about 4
    #: optimiser steps of the demo network (16 for an epistemic model's MC votes).
    val_every_epochs: int = 1
    #: Start the output bias at the log label shares of training patches (:meth:`PhysicsUNet.set_output_prior`,
    #: :func:`physeg.training.patches.patch_label_frequencies`); fine-tuned children keep their parent's.
    prior_bias: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Every field, less those of :data:`TRAINING_ADDED_FIELDS` at their value from before they existed."""
        return _without_unchanged_additions(dataclasses.asdict(self), TRAINING_ADDED_FIELDS)


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one compute profile. Times in seconds, sizes in voxels/mm."""

    name: str
    #: Voxel size (mm, isotropic) of the cohort maps; MNI templates are resampled to it.
    voxel_size_mm: float
    #: Subjects used from the fixed 18/4/5 split (first n of each part).
    n_train: int
    n_val: int
    n_test: int
    #: Training patch edge (voxels) and U-Net channel widths per level.
    patch_size: int
    channels: tuple[int, ...]
    #: Optimiser, budget, data and loss weights of training.
    training: TrainingConfig
    #: Realisations per validation subject (fixed IoD set; early stopping and calibration).
    n_val_realisations: int
    #: Test grid per test subject and sequence.
    n_test_iod: int
    n_test_ood: int
    #: Monte-Carlo samples per image (aleatoric and epistemic each, §2.4).
    n_uncertainty_samples: int
    #: Sliding-window overlap at inference.
    sw_overlap: float
    sequences: tuple[str, ...] = SEQUENCES
    ablations: tuple[str, ...] = ABLATIONS
    uncertainty_models: tuple[str, ...] = UNCERTAINTY_MODELS
    #: Seed of the cohort, the test and validation grids and the evaluation's noise (fixed across models).
    seed: int = 0
    #: Training seeds: every model is trained once per seed (initialisation, batches, dropout); the
    #: tables give the mean and the seed-to-seed SD, and claims 1-3 need at least two seeds that agree
    #: (:mod:`physeg.evaluation.claims`).
    seeds: tuple[int, ...] = (0,)
    #: Test-grid images per subject, sequence and distribution that get the
    #: 50 + 50 uncertainty samples (evenly spaced over the grid, always the
    #: centre of equal strata of TI (MPRAGE) or FA (SPGR), never only an extreme:
    #: :func:`physeg.evaluation.grid.uncertainty_subset`); ``None`` = every image (paper).
    n_uncertainty_images: int | None = None
    #: Dropout rate after every convolution of the epistemic models (paper §2.4: 0.5; the input keeps
    #: 0.05). The demo's 8-64-channel network loses too much at 0.5 (benchmarks/epistemic_dropout.py:
    #: Monte-Carlo vote Dice 0.86/0.78/0.24 against its parent's 0.93/0.92/0.74 at 0.5, within 0.03 of
    #: it at 0.1), so the CPU profiles use 0.1 and say so; reference-long and paper keep 0.5.
    epistemic_dropout: float = 0.5
    #: How many of ``seeds`` (the first ones) train the uncertainty variants. With one, claims 4-5
    #: have no seed-to-seed spread and give no verdict (:mod:`physeg.evaluation.claims`); each extra
    #: seed costs the variants' training and a second set of uncertainty samples.
    uncertainty_seeds: int = 1
    #: Epochs of the epistemic variants' dropout fine-tuning from their deterministic parent (``None``:
    #: ``training.max_epochs``, the budget of every other model); the learning-rate schedule spans them.
    #: benchmarks/epistemic_dropout.py: on ``reference`` (dropout 0.1) the Monte-Carlo vote comes within
    #: 0.03 of the parent on every tissue with twice the budget, not with the same.
    epistemic_epochs: int | None = None
    #: Generative model of the synthetic cohort (:data:`physeg.data.cohort.GENERATOR_VERSIONS`): 2 puts CSF
    #: around the brain (:func:`physeg.data.synthetic.extracerebral_csf`); the frozen CPU references used 1.
    cohort_generator: int = 2
    #: Validation subjects (first of the split's 4) whose images calibrate the volume intervals; ``None``: n_val.
    n_calibration_subjects: int | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.uncertainty_seeds <= len(self.seeds):
            raise ValueError(f"profile {self.name!r}: uncertainty_seeds must be between 1 and the number of "
                             f"seeds ({len(self.seeds)}), got {self.uncertainty_seeds}")
        if self.n_calibration_subjects is not None and not 1 <= self.n_calibration_subjects <= 4:
            raise ValueError(f"profile {self.name!r}: n_calibration_subjects must be between 1 and the split's 4 "
                             f"validation subjects (or None), got {self.n_calibration_subjects}")
        if self.epistemic_epochs is not None and self.epistemic_epochs < 1:
            raise ValueError(f"profile {self.name!r}: epistemic_epochs must be at least 1 (or None), "
                             f"got {self.epistemic_epochs}")

    @property
    def calibration_subjects(self) -> int:
        """How many validation subjects calibrate the volume intervals (:attr:`n_calibration_subjects`)."""
        return self.n_val if self.n_calibration_subjects is None else self.n_calibration_subjects

    @property
    def uncertainty_seed_list(self) -> tuple[int, ...]:
        """The training seeds of the uncertainty variants: the first :attr:`uncertainty_seeds` of :attr:`seeds`."""
        return tuple(self.seeds[: self.uncertainty_seeds])

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (training settings nested under ``"training"``), for hashing and writing.

        Fields added after results were frozen (:data:`ADDED_FIELDS`) are left out while they hold
        the value every profile had before the field existed, so that a profile whose settings did not
        change keeps its caches, model folders and frozen results.
        """
        d = _without_unchanged_additions(dataclasses.asdict(self), ADDED_FIELDS)
        return {**d, "training": self.training.to_dict()}

    def flat_dict(self) -> dict[str, Any]:
        """Every setting, with the training settings as ``training.<field>`` keys (one level, for tables)."""
        d = dataclasses.asdict(self)
        training = d.pop("training")
        return {**d, **{f"training.{k}": v for k, v in training.items()}}


#: Profile fields added after the first results were frozen, and the value each stood for before it existed
#: (omitted from :meth:`Profile.to_dict` at that value). ``cohort_generator`` defaults to 2, but was 1.
ADDED_FIELDS: dict[str, Any] = {"epistemic_dropout": 0.5, "uncertainty_seeds": 1, "epistemic_epochs": None,
                                "cohort_generator": 1, "n_calibration_subjects": None}
TRAINING_ADDED_FIELDS: dict[str, Any] = {"prior_bias": False}  # the same for TrainingConfig.to_dict


def _without_unchanged_additions(d: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in added and v == added[k])}

#: The CPU recipe of ``reference`` (batch 4; epochs set there), the demo's until it moved to batch 2.
_CPU_TRAINING_BATCH4 = TrainingConfig(
    batch_size=4,
    learning_rate=3e-3,
    max_epochs=8,
    steps_per_epoch=18,
    patience=7,
    n_pregenerated=8,
    aleatoric_passes=10,
    strat_weight=1.0,
    lr_schedule="poly",
    warmup_fraction=0.05,
    dice_weight=1.0,
    val_every_epochs=2,
)

_DEMO = Profile(
    name="demo",
    voxel_size_mm=4.0,
    n_train=18,
    n_val=2,
    n_test=5,
    patch_size=32,
    channels=(8, 16, 32, 64),
    # batch 2 x 288 steps, not 4 x 144 (same patches): validation GM/WM +0.05/+0.02 (runs/2026-11-26-demo-batch2/)
    # prior_bias: a class stuck at Dice 0 in 3 of 6 runs without, 1 of 6 with (benchmarks/convergence.py)
    training=dataclasses.replace(_CPU_TRAINING_BATCH4, batch_size=2, max_epochs=16, val_every_epochs=4,
                                 prior_bias=True),
    n_val_realisations=3,
    n_test_iod=10,
    n_test_ood=10,
    n_uncertainty_samples=10,
    sw_overlap=0.25,
    n_uncertainty_images=1,
    seeds=(0, 1),
    epistemic_dropout=0.1,
    # twice the others' budget: Phys-Strat-Aug MC vote WM 0.816/0.781 (MPRAGE/SPGR) at 144 steps, 0.849/0.792 at
    # 288, parents 0.854/0.811 (benchmarks/epistemic_dropout.py, batch 4; runs/2026-11-26-epistemic-dropout/)
    epistemic_epochs=32,
    n_calibration_subjects=4,  # with 2, 18 % of located 50 % intervals covered IoD (notebook 05)
    notes=(
        "Laptop CPU; two training seeds (the seed-to-seed spread is measured, not assumed); models trained "
        "side by side, one process per core; uncertainty on 1 grid image per subject/sequence/distribution with "
        "10 samples each (MC dropout over whole volumes is the CPU bottleneck); 288 steps of batch 2 at lr 3e-3 "
        "with 5 % warm-up and poly decay instead of the paper's constant 1e-4 on batch 4, plus a soft-Dice term "
        "(weight 1) beside the cross-entropy for the rare CSF; validation every 4 epochs. Batch 2 for twice the "
        "steps sees the same patches as batch 4 and trained better in benchmarks/convergence.py (Phys-Strat-Aug, "
        "3 runs: validation GM +0.05 to +0.06, WM +0.01 to +0.02 Dice, for 1.1x the time). This budget does NOT "
        "converge: the same benchmark gives validation Dice GM/WM/CSF 0.92/0.91/0.67 only after 600 steps of "
        "batch 4, about 4x the demo's training time; training validates on 2 of the 4 validation subjects with 3 "
        "realisations each to keep validation cheap, and all 4 calibrate the volume intervals; epistemic "
        "models fine-tuned with dropout 0.1 (input 0.05) instead of the paper's 0.5, which leaves this narrow "
        "network too little, for twice the others' steps (benchmarks/epistemic_dropout.py)."
    ),
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        voxel_size_mm=6.0,
        n_train=3,
        n_val=1,
        n_test=2,
        patch_size=16,
        channels=(4, 8, 16),
        training=TrainingConfig(batch_size=4, learning_rate=1e-3, max_epochs=2, steps_per_epoch=2, patience=7,
                                n_pregenerated=4, aleatoric_passes=3, strat_weight=1.0, prior_bias=True),
        n_val_realisations=4,
        n_test_iod=4,
        n_test_ood=4,
        n_uncertainty_samples=5,
        sw_overlap=0.25,
        notes="CI: checks that everything runs, not the science.",
    ),
    "demo": _DEMO,
    # reference: the largest run estimated to fit about 2 h on 2 idle CPU cores, every claim testable. Estimate
    # (CPU s of one thread, demo size, 2-core AVX2 EPYC, 2026-11-25: 0.40 s per training step with the CPU layout
    # (benchmarks/train_step.py --layout), 0.56 s per forward pass, 0.77 s per MC sample, 1.1 s per 50 aleatoric):
    #   training   40 models (4 ablations x 2 sequences x 3 seeds + 4 uncertainty variants x 2 sequences
    #              x 2 seeds) x 360 steps x 0.40 s = 5800 s, + 5 validations per model       ->  6300 s
    #   Tables 1-2 3 seeds x 5 subjects x 2 sequences x 20 images x 4 models x 0.56 s        ->  1350 s
    #   intervals  (5 test subjects x 2 sequences x 2 distributions x 2 images + 2 val subjects x 3
    #              x 2 sequences) x 2 models x 2 seeds x (50 x 0.77 + 1.1) s                  ->  8200 s
    #   cohort, PGS, robustness, pages                                                       ->   900 s
    #   total ~ 16 800 CPU s on two cores ~ 2.5 h wall (the second seed of the uncertainty variants,
    #   which gives claims 4-5 a seed spread, added ~1 h).
    # 360 steps of batch 4 (600 reach validation GM/WM 0.92/0.91 in benchmarks/convergence.py, but would not
    # fit); 2 uncertainty images per cell give claim 5(c) power about 0.6 for |rho| = 0.5.
    "reference": dataclasses.replace(
        _DEMO,
        name="reference",
        # frozen results/reference/: epistemic variants at the others' 360 steps (3 of 4 Phys-Strat-Aug votes
        # lost CSF); at epistemic_epochs=40 they learn it (trained once, README "Status"), not re-frozen
        epistemic_epochs=None,
        cohort_generator=1,  # the frozen results' cohort: the brain's edge mixes with air
        n_calibration_subjects=None,  # the frozen results calibrated on the 2 validation subjects
        training=dataclasses.replace(_CPU_TRAINING_BATCH4, max_epochs=20, val_every_epochs=4),
        n_uncertainty_samples=50,
        seeds=(0, 1, 2),
        uncertainty_seeds=2,
        n_uncertainty_images=2,
        notes=(
            "CPU reference between demo and paper: the demo's network and recipe at 4 mm, trained 2.5x longer "
            "(360 steps: lr 3e-3, 5 % warm-up, poly decay, CE + soft Dice), three training seeds (claims 1-3 "
            "against the seed spread; the uncertainty variants with the first two, for claims 4-5), 50 aleatoric + 50 epistemic samples on 2 grid images per subject, "
            "sequence and distribution; estimated 2.5 h on 2 idle CPU cores (see the comment above this entry "
            "in physeg/profiles.py). Still short of convergence (600 steps reach GM/WM 0.92/0.91 in "
            "benchmarks/convergence.py). Epistemic dropout 0.1 (input 0.05), not the paper's 0.5 "
            "(benchmarks/epistemic_dropout.py: at 0.5 the Monte-Carlo vote falls 0.07-0.5 Dice below the "
            "deterministic parent)."
        ),
    ),
    "paper": Profile(
        name="paper",
        voxel_size_mm=1.0,
        n_train=18,
        n_val=4,
        n_test=5,
        patch_size=128,
        channels=(30, 60, 120, 240, 480),
        training=TrainingConfig(batch_size=4, learning_rate=1e-4, max_epochs=200, steps_per_epoch=72, patience=7,
                                n_pregenerated=20, aleatoric_passes=20, strat_weight=1.0),
        n_val_realisations=10,
        n_test_iod=30,
        n_test_ood=30,
        n_uncertainty_samples=50,
        sw_overlap=0.5,
        seeds=(0, 1, 2),
        uncertainty_seeds=3,
        notes="The paper's settings (three training seeds, to measure the seed-to-seed spread, for the "
              "uncertainty variants too); needs a GPU.",
    ),
}

# reference-long: the reference profile with 4x its training (1440 steps), for a GPU. The 360 steps of "reference"
# leave every ablation short of its plateau: do its verdicts survive training that long? Its 34 models (the 32 of the
# reference plus the physics-artefact arm of page 09) are trained on a GPU (scripts/gpu_reference_long.sh: one
# H100/H200, worker processes sharing it); the evaluation pages run on the CPU (about 35 min on 2 cores with the
# reference's 2 uncertainty images per cell; with 10, page 05 alone takes about 5x its 20 min). On 2 CPU cores alone
# the training would take about 4 x 5000 s.
PROFILES["reference-long"] = dataclasses.replace(
    PROFILES["reference"],
    name="reference-long",
    training=dataclasses.replace(PROFILES["reference"].training, max_epochs=80, val_every_epochs=8),
    n_uncertainty_images=10,
    epistemic_dropout=0.5,  # the paper's rate: its models were trained with it (on a GPU)
    epistemic_epochs=None,  # its epistemic variants had the others' 1440 steps (GPU): this hash, these results
    # uncertainty variants trained once (GPU): a second seed's samples would cost page 05 ~80 min on 2 cores
    uncertainty_seeds=1,
    notes=(
        "The reference profile trained 4x longer (1440 steps: lr 3e-3, 5 % warm-up, poly decay, CE + soft "
        "Dice; validation every 8 epochs), to test whether the reference's verdicts are artefacts of "
        "under-training. Models trained on a GPU (scripts/gpu_reference_long.sh), evaluated on the CPU; "
        "three training seeds; 50 + 50 uncertainty samples on 10 grid images per subject, sequence and "
        "distribution (the reference has 2), so that claim 5 is testable: its correlation test pools "
        "100 images per sequence x tissue."
    ),
)

# paper-short: the paper profile cut to what one 15-minute GPU lease can build, train and evaluate
# (scripts/gpu_paper_short.py): the paper's 1 mm cohort, network (widths 30-480, 128^3 patches, batch 4) and optimiser
# (Adam 1e-4, constant, cross-entropy), but 8 epochs (576 steps) of the paper's at most 200 (14 400 steps, early
# stopping after 7 epochs without improvement), one training seed, validation every 4 epochs on 4 realisations per
# subject, and 4 IoD + 4 OoD test images per subject. One step took 160 ms on an H200 (runs/2026-11-26-reference-long-gpu/
# machine.txt), so the paper's own budget would need about 40 min per model, for 4 ablations x 2 sequences x 3
# seeds and the uncertainty variants: beyond any lease here. What it can show: how far the paper's recipe gets at its
# own scale in 576 steps; not a verdict.
PROFILES["paper-short"] = dataclasses.replace(
    PROFILES["paper"],
    name="paper-short",
    training=dataclasses.replace(PROFILES["paper"].training, max_epochs=8, val_every_epochs=4),
    n_val_realisations=4,
    n_test_iod=4,
    n_test_ood=4,
    seeds=(0,),
    uncertainty_seeds=1,
    notes=(
        "The paper profile (1 mm, widths 30-480, 128^3 patches, batch 4, Adam 1e-4) cut to 8 epochs "
        "(576 of its up to 14 400 steps), one training seed, 4 + 4 test images per subject: what a "
        "15-minute GPU lease can train and evaluate (scripts/gpu_paper_short.py). Under-trained by "
        "construction; its tables describe the start of the paper's training, not its result."
    ),
)

DEFAULT_PROFILE = "demo"


def get_profile(name: str | None = None) -> Profile:
    """Profile by name; ``None`` reads ``PHYSEG_PROFILE`` (default ``demo``).

    Raises
    ------
    ValueError
        If the name is not one of :data:`PROFILES`.
    """
    name = name or os.environ.get("PHYSEG_PROFILE", DEFAULT_PROFILE)
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {sorted(PROFILES)}"
        ) from None

r"""Training data: pre-generated or on-the-fly realisations, mixed or stratified batches.

Every training image comes out of the simulation layer of paper §2.3
(:class:`physeg.simulation.layer.SimulationLayer`): acquisition parameters θ
(seconds/radians) are drawn from the in-distribution box and the static
equation of the sequence turns a subject's quantitative maps [PD, T1, T2*]
into a normalised image. The whole volume is simulated before cropping, so
the intensity normalisation is the same for training, validation and test.

Two data modes (paper §2.3, §4)

``"pregenerated"`` (Baseline, Phys-Base, Phys-Strat)
    For every training subject, ``n_pregenerated`` IoD parameter vectors are
    drawn ONCE by a layer seeded from the profile seed and the sequence (so
    every pre-generated model sees the same images), simulated once and kept
    in memory (:func:`pregenerate`).
``"onthefly"`` (Phys-Strat-Aug)
    Every batch draws new IoD parameters and simulates them from the subject's
    maps: the simulation layer used as an augmentation (paper §2.3).

Two batch modes

``"mixed"``
    Each of the ``batch_size`` items has its own random subject, realisation
    and patch location.
``"stratified"``
    One random subject and ONE patch location; the batch holds ``batch_size``
    different realisations of it (pre-generated: drawn without replacement),
    so the penultimate features should agree (stratification loss, §2.2).

Patch centres are drawn uniformly among brain-mask voxels; the patch is then
shifted to lie inside the volume (volumes smaller than the patch are
zero-padded once, up front). Every random choice -- subject, location,
realisation and the on-the-fly parameters -- comes from the sampler's one
``torch.Generator``, whose state is checkpointed
(:meth:`TrainingBatches.state_dict`), so a resumed run draws the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from physeg.conventions import IOD
from physeg.simulation.artefacts import Artefacts
from physeg.simulation.layer import SimulationLayer
from physeg.training.patches import corner_for_centre

DATA_MODES: tuple[str, ...] = ("pregenerated", "onthefly")
BATCH_MODES: tuple[str, ...] = ("mixed", "stratified")


@dataclass
class Volumes:
    """One subject in memory: maps (3, X, Y, Z) float32, mask (X, Y, Z) bool, labels (X, Y, Z) int64."""

    subject_id: str
    maps: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_subject(cls, subject: Any) -> "Volumes":
        """From a :class:`physeg.data.Subject` (or anything with ``maps``, ``mask``, ``pgs``)."""
        labels = getattr(subject, "pgs", None)
        if labels is None:
            labels = subject.labels
        return cls(
            subject_id=str(getattr(subject, "subject_id", "?")),
            maps=torch.as_tensor(subject.maps, dtype=torch.float32),
            mask=torch.as_tensor(subject.mask).bool(),
            labels=torch.as_tensor(labels).long(),
        )

    def padded(self, size: int) -> "Volumes":
        """Zero-pad (symmetrically) every spatial dim to at least ``size``."""
        pads: list[int] = []
        for d in reversed(self.maps.shape[1:]):
            extra = max(0, size - d)
            pads += [extra // 2, extra - extra // 2]
        if not any(pads):
            return self
        return Volumes(
            self.subject_id,
            F.pad(self.maps, pads),
            F.pad(self.mask, pads),
            F.pad(self.labels, pads),
        )


@dataclass
class Realisations:
    """Simulated images of one subject: images (N, 1, X, Y, Z), parameters θ (N, P) in seconds/radians."""

    images: torch.Tensor
    params: torch.Tensor


def pregenerate(
    subjects: list[Volumes], *, sequence: str, n: int, seed: int, distribution: str = IOD,
    artefacts: Artefacts | None = None,
) -> list[Realisations]:
    """``n`` realisations per subject, all parameters drawn by one simulation layer seeded by ``seed``.

    Subjects are visited in order, so the draws of subject ``i`` depend on the
    number of subjects before it (as with one generator); images are percentile
    normalised inside each subject's mask (:func:`physeg.simulation.layer.simulate`).
    ``artefacts``: physics artefacts drawn per realisation after its parameters
    (:mod:`physeg.simulation.artefacts`; ``None``: the paper's noise-free images).
    """
    layer = SimulationLayer(sequence, distribution=distribution, seed=int(seed), artefacts=artefacts)
    out = []
    for s in subjects:
        images, params = layer(s.maps, n, mask=s.mask)
        out.append(Realisations(images, params.cpu().float()))
    return out


def crop(x: torch.Tensor, start: tuple[int, int, int], size: int) -> torch.Tensor:
    """``x[..., a:a+size, b:b+size, c:c+size]``."""
    a, b, c = start
    return x[..., a:a + size, b:b + size, c:c + size]


class TrainingBatches:
    """Endless source of training batches (see module docstring).

    Parameters
    ----------
    subjects
        Training subjects (:class:`Volumes`).
    sequence
        A sequence of the registry (:mod:`physeg.simulation.sequences`), one output image.
    patch_size, batch_size
        Cubic patch edge (voxels) and items per batch.
    data, batches
        ``"pregenerated" | "onthefly"`` and ``"mixed" | "stratified"``.
    n_pregenerated, pregenerated_seed
        Size and seed of the fixed realisation set (pre-generated mode).
    seed
        Seed of the sampler's generator (patch locations, choices, on-the-fly parameters).
    device
        Where batches (and on-the-fly simulation) go.
    pregenerated
        Reuse an existing realisation set (e.g. shared between models).
    artefacts
        Physics artefacts (B1+ inside the equations, receive bias, Rician noise;
        :class:`physeg.simulation.artefacts.Artefacts`) drawn from the sampler's
        generator for every simulated realisation; ``None`` (default): none, and
        the random stream is the one without this option.
    post_transform
        ``(images (N, 1, X, Y, Z), mask) -> images`` applied to every on-the-fly
        realisation after the simulation (an augmentation outside the physics,
        :mod:`physeg.training.augmentation`); ``None`` (default): none.
    """

    def __init__(
        self,
        subjects: list[Volumes],
        *,
        sequence: str,
        patch_size: int,
        batch_size: int,
        data: str = "pregenerated",
        batches: str = "mixed",
        n_pregenerated: int = 8,
        pregenerated_seed: int = 0,
        seed: int = 0,
        device: torch.device | str = "cpu",
        pregenerated: list[Realisations] | None = None,
        artefacts: Artefacts | None = None,
        post_transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if data not in DATA_MODES:
            raise ValueError(f"data must be one of {DATA_MODES}")
        if batches not in BATCH_MODES:
            raise ValueError(f"batches must be one of {BATCH_MODES}")
        if not subjects:
            raise ValueError("no training subjects")
        self.sequence, self.patch_size, self.batch_size = sequence, int(patch_size), int(batch_size)
        self.data, self.batches = data, batches
        self.device = torch.device(device)
        self.subjects = [s.padded(self.patch_size) for s in subjects]
        # brain voxels (patch centres); fall back to all voxels for an empty mask
        self._centres = [
            torch.nonzero(s.mask) if s.mask.any() else torch.nonzero(torch.ones_like(s.mask)) for s in self.subjects
        ]
        self.generator = torch.Generator().manual_seed(int(seed))
        self.post_transform = post_transform
        if post_transform is not None and data != "onthefly":
            raise ValueError("post_transform applies to on-the-fly realisations only")
        self.realisations: list[Realisations] | None = None
        self.layer: SimulationLayer | None = None
        if data == "pregenerated":
            self.realisations = pregenerated if pregenerated is not None else pregenerate(
                self.subjects, sequence=sequence, n=n_pregenerated, seed=pregenerated_seed, artefacts=artefacts
            )
            if len(self.realisations) != len(self.subjects):
                raise ValueError("one realisation set per subject expected")
        else:
            # The layer draws θ from the sampler's own generator (shared, not copied): one random
            # stream for locations and parameters, one state to checkpoint and re-seed.
            self.layer = SimulationLayer(sequence, distribution=IOD, artefacts=artefacts)
            self.layer.generator = self.generator
            self._maps = [s.maps.to(self.device) for s in self.subjects]
            self._masks = [s.mask.to(self.device) for s in self.subjects]

    # -- random choices ---------------------------------------------------------------
    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.generator))

    def _location(self, s: int) -> tuple[int, int, int]:
        centres = self._centres[s]
        c = centres[self._randint(centres.shape[0])]
        return corner_for_centre(c.tolist(), shape=self.subjects[s].mask.shape, size=self.patch_size)

    def _simulate(self, s: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` new IoD realisations of subject ``s`` on the device: images (n, 1, X, Y, Z), θ (n, P)."""
        images, params = self.layer(self._maps[s], n, mask=self._masks[s])
        if self.post_transform is not None:
            images = self.post_transform(images, self._masks[s])
        return images, params

    def _stratified(self) -> tuple[list[tuple[int, tuple[int, int, int]]], torch.Tensor, torch.Tensor]:
        """One subject, one location, ``batch_size`` distinct realisations (§2.2)."""
        B, p = self.batch_size, self.patch_size
        s = self._randint(len(self.subjects))
        loc = self._location(s)
        if self.data == "pregenerated":
            r = self.realisations[s]
            n = r.images.shape[0]
            perm = torch.randperm(n, generator=self.generator)
            # without replacement when the set is large enough, else with replacement
            idx = perm[:B] if n >= B else torch.randint(n, (B,), generator=self.generator)
            images, params = r.images[idx], r.params[idx]
        else:
            images, params = self._simulate(s, B)
        return [(s, loc)] * B, crop(images, loc, p), params

    def _mixed(self) -> tuple[list[tuple[int, tuple[int, int, int]]], torch.Tensor, torch.Tensor]:
        """Each item its own subject, location and realisation."""
        items, crops, plist = [], [], []
        for _ in range(self.batch_size):
            s = self._randint(len(self.subjects))
            loc = self._location(s)
            items.append((s, loc))
            if self.data == "pregenerated":
                r = self.realisations[s]
                k = self._randint(r.images.shape[0])
                img, par = r.images[k], r.params[k]
            else:
                images, params = self._simulate(s, 1)
                img, par = images[0], params[0]
            crops.append(crop(img, loc, self.patch_size).to(self.device))
            plist.append(par)
        return items, torch.stack(crops), torch.stack(plist)

    # -- batches ------------------------------------------------------------------------
    def next_batch(self) -> dict[str, torch.Tensor]:
        """``image`` (B, 1, p, p, p), ``label`` (B, p, p, p), ``params`` (B, P) θ in s/rad,
        ``subject`` (B,) subject indices, ``start`` (B, 3) patch corners; on ``device``."""
        items, image, params = self._stratified() if self.batches == "stratified" else self._mixed()
        label = torch.stack([crop(self.subjects[s].labels, loc, self.patch_size) for s, loc in items])
        return {
            "image": image.to(self.device, torch.float32).contiguous(),
            "label": label.to(self.device),
            "params": params.to(self.device, torch.float32),
            "subject": torch.tensor([s for s, _ in items]),
            "start": torch.tensor([loc for _, loc in items]),
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Generator state (a uint8 tensor: safe for ``torch.load(weights_only=True)``)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (the layer shares the generator, so it follows)."""
        self.generator.set_state(state["generator"])

    def reseed(self, seed: int) -> None:
        """Restart the generator from ``seed`` (used at each epoch start for exact resume)."""
        self.generator.manual_seed(int(seed))

"""Monte-Carlo sample label maps reduced on the fly (paper §2.4): volumes, votes, majority, mean probabilities.

The predictor (:mod:`physeg.inference.predictor`) produces sample label maps
in chunks of ``k`` samples ``(k, V)``; :class:`SampleTally` keeps, from the same
samples, the tissue voxel counts of each sample, the per-class vote counts of
each voxel and the summed class probabilities, so no stack of ``n`` label
maps or probability maps is ever kept. :class:`Samples` is the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from physeg.conventions import TISSUES


def class_argmax(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(1)`` for scores ``(B, C, *S)`` by a running maximum over the few classes.

    Same result (the first maximum wins ties) but several times faster on CPU
    than a reduction over the strided class axis, and no copy of ``x``.
    """
    best = x[:, 0].clone()
    idx = torch.zeros(best.shape, dtype=torch.int64, device=x.device)
    for c in range(1, x.shape[1]):
        xc = x[:, c]
        idx.masked_fill_(xc > best, c)
        best = torch.maximum(best, xc)
    return idx


@dataclass(frozen=True)
class Samples:
    """Monte-Carlo samples of one image, reduced (:meth:`physeg.inference.predictor.Predictor.sample`).

    ``counts`` ``(n, 3)`` int64: voxels of GM, WM, CSF (:data:`physeg.conventions.TISSUES`
    order) in each sample label map. With ``maps``: ``votes`` ``(C, *S)``
    float32, the fraction of samples giving each voxel each class;
    ``labels`` ``(*S)`` uint8, the majority vote (lowest class wins ties);
    ``probabilities`` ``(C, *S)`` float32, the mean softmax over the samples.
    All on the CPU.
    """

    kind: str
    counts: np.ndarray
    votes: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.counts.shape[0])

    def volumes_ml(self, voxel_volume_ml: float) -> np.ndarray:
        """Tissue volume samples ``(n, 3)`` in ml: counts × voxel volume (ml)."""
        return self.counts.astype(np.float64) * float(voxel_volume_ml)


class SampleTally:
    """Running reductions over chunks of sample label maps ``(k, V)`` of ``V`` voxels.

    Per sample the voxel counts of GM, WM, CSF; with ``maps`` per voxel the
    number of samples voting each class (int32) and the summed probabilities.
    :meth:`result` divides by ``n``: vote fractions, their argmax (the
    majority vote) and the mean probabilities.
    """

    def __init__(self, *, n_classes: int, voxels: int, device: torch.device, maps: bool) -> None:
        self.counts: list[torch.Tensor] = []
        self.maps = maps
        self.votes = torch.zeros((n_classes, voxels), dtype=torch.int32, device=device) if maps else None
        self.prob_sum = torch.zeros((n_classes, voxels), dtype=torch.float32, device=device) if maps else None

    def add(self, labels: torch.Tensor, prob_sum: torch.Tensor | None = None) -> None:
        # int32 sums: exact below 2**31 voxels, and several times faster on CPU than the default int64
        self.counts.append(torch.stack([(labels == lab).sum(1, dtype=torch.int32) for lab in TISSUES.values()],
                                       1).cpu())
        if self.maps:
            for c in range(self.votes.shape[0]):
                self.votes[c] += (labels == c).sum(0, dtype=torch.int32)
            self.prob_sum += prob_sum

    def result(self, kind: str, shape: Sequence[int]) -> Samples:
        return reduce_tallies(kind, torch.cat(self.counts), self.votes if self.maps else None, self.prob_sum, shape)


def reduce_tallies(kind: str, counts: torch.Tensor, votes: torch.Tensor | None, prob_sum: torch.Tensor | None,
                   shape: Sequence[int]) -> Samples:
    """:class:`Samples` from tissue counts ``(n, 3)``, and vote counts and summed probabilities ``(C, V)``
    (``None``: volumes only): vote fractions, their argmax (majority vote) and mean probabilities."""
    counts = counts.cpu().numpy().astype(np.int64)
    if votes is None:
        return Samples(kind=kind, counts=counts)
    n = counts.shape[0]
    fractions = (votes.float() / n).reshape(-1, *shape)
    labels = class_argmax(fractions[None])[0].to(torch.uint8)
    probs = (prob_sum / n).reshape(-1, *shape)
    return Samples(kind=kind, counts=counts, votes=fractions.cpu(), labels=labels.cpu(), probabilities=probs.cpu())

r"""Scanner artefacts as training augmentation: inside the signal equation, or after it (issue 17; paper §5).

The paper trains on noise-free images with ideal flip angles and names B0/B1
inhomogeneity as future work (§5). Two ways to show a network artefacts while
it trains on the on-the-fly images of Phys-Strat-Aug (paper §2.3):

``"physics"``
    The simulation layer draws, per realisation, a smooth **B1+** field that
    scales the flip angles inside the equation (MPRAGE: the inversion
    efficiency; SPGR: α), a smooth **receive bias** (a multiplicative field)
    and **Rician noise** at an SNR (:class:`physeg.simulation.artefacts.Artefacts`).
    A B1+ error changes *contrast*, as on a scanner.
``"torchio"``
    The usual augmentation of the field: the clean simulated image is
    multiplied by TorchIO's ``RandomBiasField`` (the exponential of a random
    polynomial) and TorchIO's ``RandomNoise`` (Gaussian) is added, both after
    the simulation and its normalisation. A B1+ error can only appear as a
    brightness change.

Both arms draw from the same ranges (:data:`ARMS`): peak log bias up to
0.6 (TorchIO: polynomial coefficients in ±0.6, order 2), SNR 10–40 (TorchIO:
noise σ = head mean / SNR of the normalised image, the SNR drawn per image),
and the physics arm adds a B1+ peak error up to 30 %; the ranges cover the
levels of the robustness study (:data:`physeg.evaluation.robustness.LEVELS`).
The physics arm's draws come from the sampler's generator (exactly
resumable); TorchIO draws from torch's global generator, which the training
loop re-seeds at every epoch from (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from physeg.simulation.artefacts import Artefacts

#: ``images (N, 1, X, Y, Z), mask (X, Y, Z) -> images``: applied to simulated training images.
PostTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Augmentation:
    """Artefacts added to a run's on-the-fly training images (module docstring)."""

    #: ``"physics"`` (inside the equation) or ``"torchio"`` (after it).
    name: str
    #: Physics artefacts drawn by the simulation layer (``None``: none).
    artefacts: Artefacts | None = None
    #: TorchIO ``RandomBiasField`` coefficient bound (0: no bias field) and polynomial order.
    torchio_bias: float = 0.0
    torchio_order: int = 2
    #: SNR range of TorchIO's Gaussian noise (σ = head mean / SNR); ``None``: no noise.
    torchio_snr: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "artefacts": None if self.artefacts is None else self.artefacts.to_dict(),
                "torchio_bias": self.torchio_bias, "torchio_order": self.torchio_order,
                "torchio_snr": None if self.torchio_snr is None else list(self.torchio_snr)}

    def post_transform(self) -> PostTransform | None:
        """The after-the-simulation transform of the TorchIO arm (``None`` for the physics arm)."""
        if self.torchio_bias <= 0 and self.torchio_snr is None:
            return None
        return _TorchIOArtefacts(bias=self.torchio_bias, order=self.torchio_order, snr=self.torchio_snr)


class _TorchIOArtefacts:
    """TorchIO's ``RandomBiasField`` then ``RandomNoise`` on each image, noise σ from the head mean."""

    def __init__(self, *, bias: float, order: int, snr: tuple[float, float] | None) -> None:
        import torchio as tio  # optional heavy import, only for this arm

        self._tio = tio
        self._bias = tio.RandomBiasField(coefficients=bias, order=order) if bias > 0 else None
        self._snr = snr

    def __call__(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tio = self._tio
        head = mask.bool().cpu() if mask.any() else None  # the voxels whose mean sets σ (all, for an empty mask)
        out = []
        for image in images:  # (1, X, Y, Z): TorchIO's channel-first layout
            img = tio.ScalarImage(tensor=image.detach().cpu().float())
            if self._bias is not None:
                img = self._bias(img)
            if self._snr is not None:
                head_mean = float(img.data[0][head].mean() if head is not None else img.data.mean())
                lo, hi = self._snr
                img = tio.RandomNoise(std=(head_mean / hi, head_mean / lo))(img)
            out.append(img.data.to(images.device, images.dtype))
        return torch.stack(out)


#: The two arms of the training comparison, at the same ranges (module docstring).
ARMS: dict[str, Augmentation] = {
    "physics": Augmentation("physics", artefacts=Artefacts(b1=(0.0, 0.3), bias=(0.0, 0.6), snr=(10.0, 40.0))),
    "torchio": Augmentation("torchio", torchio_bias=0.6, torchio_order=2, torchio_snr=(10.0, 40.0)),
}

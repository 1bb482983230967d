"""TorchIO transform wrapping the simulation layer, for ``tio.Compose`` / ``tio.Queue`` pipelines.

Input subject: a 3-channel ``ScalarImage`` ``maps`` ([PD, T1 s, T2* s], the
name is configurable) or three 1-channel images ``PD``, ``T1``, ``T2star``;
optionally a brain mask image (``mask_key``) for the normalisation.

Output subject (a copy, as TorchIO transforms do): a new ``ScalarImage``
``image`` (configurable; 1 channel, or one per scanner image with
``outputs="all"``) with the simulated contrast and the affine of the maps,
optionally with physics artefacts (``artefacts=``: B1+ inside the equations,
receive bias, Rician noise; :mod:`physeg.simulation.artefacts`), plus three plain entries

* ``subject["params"]``: ``(P,)`` float tensor, seconds/radians,
* ``subject["physics"]``: ``(F,)`` physics features for the network,
* ``subject["sequence"]``: the sequence name,

which the default ``DataLoader`` collation stacks into ``(B, P)`` / ``(B, F)``.
The map images are kept (spatial transforms later in the pipeline then move
maps and image together; drop them with ``tio.Lambda`` or ``exclude`` if unwanted).
"""

from __future__ import annotations

import torch
import torchio as tio

from .artefacts import Artefacts
from .equations import MprageSign
from .layer import SimulationLayer, maps_from_subject
from .parameters import Ranges, physics_features, validate_parameters

__all__ = ["SimulateMRI"]


class SimulateMRI(tio.Transform):
    """Simulate one MRI contrast from quantitative maps (one realisation per call).

    Parameters
    ----------
    sequence:
        Any sequence of the registry (MPRAGE, SPGR, MP2RAGE, MESPGR).
    distribution:
        ``"iod"``, ``"ood"`` or a mapping of ranges, used when ``params`` is None.
    params:
        Fixed parameter vector ``(P,)`` or ``(1, P)`` (s/rad) instead of sampling.
    maps_key, image_key, mask_key:
        Names of the input maps image, the output image and an optional
        brain-mask image (``None``: PD > 0 defines the normalisation region).
    normalise, sign:
        As in :func:`physeg.simulation.simulate`.
    seed:
        Seed of the transform's own generator; ``None`` uses torch's global
        RNG, which DataLoader workers seed differently (recommended with
        ``num_workers > 0``).
    artefacts, outputs:
        As in :class:`~physeg.simulation.layer.SimulationLayer`.
    **kwargs:
        Passed to :class:`torchio.Transform` (e.g. ``p``, ``copy``).
    """

    def __init__(
        self,
        sequence: str,
        *,
        distribution: str | Ranges = "iod",
        params: torch.Tensor | None = None,
        maps_key: str = "maps",
        image_key: str = "image",
        mask_key: str | None = None,
        normalise: bool = True,
        sign: MprageSign = "magnitude",
        seed: int | None = None,
        artefacts: Artefacts | None = None,
        outputs: str = "default",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.layer = SimulationLayer(sequence, distribution=distribution, normalise=normalise, sign=sign, seed=seed,
                                     artefacts=artefacts, outputs=outputs)
        self.sequence = self.layer.sequence
        self.distribution = distribution
        self.params = None if params is None else validate_parameters(self.sequence, torch.as_tensor(params).reshape(1, -1))
        self.maps_key, self.image_key, self.mask_key = maps_key, image_key, mask_key
        self.normalise, self.sign, self.seed = normalise, sign, seed
        self.artefacts, self.outputs = artefacts, outputs
        self.args_names = [
            "sequence", "distribution", "params", "maps_key", "image_key", "mask_key", "normalise", "sign", "seed",
            "artefacts", "outputs",
        ]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        maps = maps_from_subject(subject, maps_key=self.maps_key)
        ref = subject[self.maps_key] if self.maps_key in subject else subject["PD"]
        mask = None
        if self.mask_key is not None:
            mask = subject[self.mask_key].data[0].bool()
        images, params = self.layer(maps, 1, params=self.params, mask=mask) if self.params is None else self.layer(
            maps, params=self.params, mask=mask
        )
        subject.add_image(tio.ScalarImage(tensor=images[0], affine=ref.affine), self.image_key)
        subject["params"] = params[0]
        subject["physics"] = physics_features(self.sequence, params)[0]
        subject["sequence"] = self.sequence
        subject.update_attributes()
        return subject

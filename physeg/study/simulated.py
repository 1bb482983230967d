"""A small BIDS dataset of simulated scans: the study walk-through (notebook 07) and the tests.

Each subject (quantitative maps PD, T1, T2* in s on its own grid) is
simulated at every protocol (:func:`physeg.simulation.simulate`, paper §2.3)
and written as a raw BIDS dataset::

    <root>/dataset_description.json, participants.tsv
    <root>/sub-XX/ses-<session>/anat/sub-XX_ses-<session>_acq-<SEQUENCE>_T1w.nii.gz (+ .json sidecar)

The sidecar holds ``PulseSequenceType`` and the parameters in BIDS units
(``InversionTime`` or ``RepetitionTime``/``EchoTime`` in s, ``FlipAngle`` in
degrees). Intensities are the simulated, normalised signal times
:data:`INTENSITY_SCALE` (a scanner-like range; ``physeg segment``
normalises again). The root must be absent or empty: nothing is overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np

from physeg.cli.errors import UsageError
from physeg.data.acquisition import SIDECAR_KEYS, Acquisition
from physeg.io_safety import atomic_write
from physeg.study.derivatives import write_json_atomic, write_text_atomic

#: Multiplies the normalised simulated signal (values ≈ 0–2) in the written images.
INTENSITY_SCALE: float = 1000.0


@dataclass(frozen=True)
class Protocol:
    """A session's scan: BIDS session label, sequence, parameters in user units (s, degrees)."""

    session: str
    sequence: str
    values: Mapping[str, float]

    def sidecar(self) -> dict[str, Any]:
        return {"PulseSequenceType": self.sequence, **{SIDECAR_KEYS[k]: float(v) for k, v in self.values.items()}}


def scan_path(root: Path, *, subject_id: str, protocol: Protocol) -> Path:
    """``<root>/sub-XX/ses-S/anat/sub-XX_ses-S_acq-SEQ_T1w.nii.gz``."""
    stem = f"{subject_id}_ses-{protocol.session}_acq-{protocol.sequence}_T1w"
    return root / subject_id / f"ses-{protocol.session}" / "anat" / f"{stem}.nii.gz"


def simulated_study(root: str | Path, *, subjects: Sequence[Any], protocols: Sequence[Protocol]) -> list[Path]:
    """Write the dataset (module docstring); ``subjects`` have ``subject_id``, ``maps``, ``mask``, ``affine``.

    Returns the image paths. :class:`UsageError` when ``root`` exists and is not empty.
    """
    import torch

    from physeg.simulation import simulate

    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} exists and is not an empty folder; choose another dataset folder")
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for subject in subjects:
        for proto in protocols:
            params = Acquisition(proto.sequence, dict(proto.values), "protocol").tensor()
            image = simulate(torch.as_tensor(subject.maps), sequence=proto.sequence, params=params,
                             mask=subject.mask)[0, 0].numpy() * INTENSITY_SCALE
            path = scan_path(root, subject_id=subject.subject_id, protocol=proto)
            out = nib.Nifti1Image(image.astype(np.float32), np.asarray(subject.affine, float))
            atomic_write(path, lambda tmp, out=out: nib.save(out, str(tmp)))
            write_json_atomic(path.with_name(path.name.replace(".nii.gz", ".json")), proto.sidecar())
            paths.append(path)
    write_json_atomic(root / "dataset_description.json",
                      {"Name": "physeg simulated study", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    write_text_atomic(root / "participants.tsv",
                      "participant_id\n" + "".join(f"{s.subject_id}\n" for s in subjects))
    return paths

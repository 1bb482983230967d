"""Find the T1-weighted scans of a BIDS dataset (BIDS 1.9 raw layout).

A BIDS root is a folder holding ``dataset_description.json``. Its scans are
``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>…]_T1w.nii[.gz]``;
folders such as ``derivatives/``, ``sourcedata/`` and ``code/`` are not
searched. An ``acq-`` entity that names the sequence (``acq-MPRAGE``,
``acq-mprage2``, ``acq-SPGR``, ``acq-FLASH`` …) is a sequence hint used when
the JSON sidecar does not name the sequence itself
(:func:`physeg.data.acquisition.sequence_from_sidecar`).

Each scan's derivatives keep its entities and drop the ``T1w`` suffix (BIDS
derivatives: ``<source entities>_dseg.nii.gz``), under the same
``sub-*/[ses-*/]anat`` folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from physeg.cli.errors import UsageError
from physeg.data.acquisition import sequence_from_sidecar

#: The file that makes a folder a BIDS dataset root.
DESCRIPTION_FILE: str = "dataset_description.json"
#: ``sub-01_ses-a_acq-MPRAGE_run-1_T1w.nii.gz`` → entities and suffix.
_NAME = re.compile(r"^(?P<entities>sub-[A-Za-z0-9]+(?:_[a-z]+-[A-Za-z0-9]+)*)_T1w\.nii(?:\.gz)?$")


@dataclass(frozen=True)
class Scan:
    """One T1-weighted image of a BIDS dataset.

    ``prefix``: its entities without the suffix (``sub-01_ses-1_acq-MPRAGE``),
    the stem of every derivative; ``folder``: ``sub-01/ses-1/anat`` relative
    to the root; ``hint``: MPRAGE/SPGR from the ``acq-`` entity, or ``None``.
    """

    path: Path
    subject: str
    session: str | None
    prefix: str
    folder: str
    hint: str | None

    @property
    def relative(self) -> str:
        """Path of the image relative to the dataset root."""
        return f"{self.folder}/{self.path.name}"


def is_bids_root(folder: str | Path) -> bool:
    """Whether ``folder`` is a folder holding ``dataset_description.json``."""
    return Path(folder).is_dir() and (Path(folder) / DESCRIPTION_FILE).is_file()


def entities_of(prefix: str) -> dict[str, str]:
    """``{"sub": "01", "ses": "1", "acq": "MPRAGE"}`` from ``sub-01_ses-1_acq-MPRAGE``."""
    return dict(part.split("-", 1) for part in prefix.split("_"))


def sequence_hint(acq: str | None) -> str | None:
    """MPRAGE or SPGR when an ``acq-`` label names the sequence, else ``None``."""
    if not acq:
        return None
    return sequence_from_sidecar({"PulseSequenceType": acq})


def normalise_labels(labels: list[str] | None) -> set[str] | None:
    """Participant labels without the ``sub-`` prefix (BIDS apps accept both); ``None``: all."""
    if not labels:
        return None
    out = {lab.removeprefix("sub-") for lab in labels}
    bad = sorted(lab for lab in out if not re.fullmatch(r"[A-Za-z0-9]+", lab))
    if bad:
        raise UsageError(f"--participant-label {bad[0]!r} is not a BIDS label (letters and digits)")
    return out


def find_scans(root: str | Path, *, participant_labels: list[str] | None = None) -> list[Scan]:
    """Every T1-weighted image of the BIDS dataset at ``root``, sorted by path.

    ``participant_labels`` (with or without ``sub-``) keeps those subjects;
    a label with no folder is a :class:`UsageError`, and so is a root that is
    not a BIDS dataset.
    """
    root = Path(root)
    if not is_bids_root(root):
        raise UsageError(f"{root} is not a BIDS dataset (no {DESCRIPTION_FILE})")
    wanted = normalise_labels(participant_labels)
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if wanted is not None:
        missing = sorted(wanted - {p.name.removeprefix("sub-") for p in subjects})
        if missing:
            raise UsageError(f"--participant-label {missing[0]}: no folder sub-{missing[0]} in {root}")
        subjects = [p for p in subjects if p.name.removeprefix("sub-") in wanted]
    scans = []
    for sub in subjects:
        for anat in sorted([sub / "anat", *sorted(sub.glob("ses-*/anat"))]):
            for path in sorted(anat.glob("*_T1w.nii*")):
                m = _NAME.match(path.name)
                if m is None or not m.group("entities").startswith(sub.name + "_") and m.group("entities") != sub.name:
                    continue
                ent = entities_of(m.group("entities"))
                scans.append(Scan(path=path, subject=ent["sub"], session=ent.get("ses"), prefix=m.group("entities"),
                                  folder=anat.relative_to(root).as_posix(), hint=sequence_hint(ent.get("acq"))))
    return scans

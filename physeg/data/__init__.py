"""Data: the synthetic MPM cohort, BIDS qMRI input/output, the manifest of known datasets.

Public API::

    LABELS                                   ("background", "GM", "WM", "CSF")
    build_cohort(profile, *, root=None) -> Path            BIDS root of the synthetic cohort
    cohort_split(profile) -> {"train": [...], "val": [...], "test": [...]}
    load_split(profile, part) -> [Subject]                 one part of the split, loaded
    list_subjects(bids_root) -> [participant ids]
    load_subject(bids_root, subject_id) -> Subject         canonical tensors
"""

from physeg.data.bids import LABELS, Subject, list_subjects, load_subject, write_nifti
from physeg.data.cohort import (
    GENERATOR_VERSION,
    N_SUBJECTS,
    SPLIT,
    build_cohort,
    cohort_split,
    default_cohort_dir,
    generate_subject,
    load_split,
)

__all__ = [
    "GENERATOR_VERSION",
    "LABELS",
    "N_SUBJECTS",
    "SPLIT",
    "Subject",
    "build_cohort",
    "cohort_split",
    "default_cohort_dir",
    "generate_subject",
    "list_subjects",
    "load_split",
    "load_subject",
    "write_nifti",
]

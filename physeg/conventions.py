r"""The shared vocabulary of physeg: tissue labels, distribution names, derived seeds.

Every module that names a tissue, a parameter distribution or derives a seed
imports it from here, so there is one spelling of each in the package. The
module imports nothing from physeg (and nothing heavy), so any module can use it.

Tissue labels (paper §2.1, §3)
    The network segments three tissues; label maps are integer arrays with
    ``0`` background, ``1`` grey matter (GM), ``2`` white matter (WM), ``3``
    cerebrospinal fluid (CSF). The paper's Tables 1 and 2 report GM and WM
    (:data:`PAPER_TISSUES`).

Distributions (paper §3)
    Acquisition parameters are drawn from the in-distribution box (*IoD*, the
    training range) or from the out-of-distribution box minus the IoD box
    (*OoD*). The canonical spelling is ``"IoD"`` / ``"OoD"``;
    :func:`distribution_name` accepts any letter case (the samplers in
    :mod:`physeg.simulation.parameters` compare lower case).

Derived seeds
    A random stream that must be the same in every process and on every run
    (pre-generated realisations, validation images, test grids, per-epoch
    re-seeding) gets its seed from a fixed string of its purpose by
    :func:`stable_seed`; Python's ``hash`` is salted per process and cannot be used.
"""

from __future__ import annotations

import zlib

#: Label value of the background in every label map.
BACKGROUND: int = 0
#: Tissue name → label value in the label maps (network classes 1..3).
TISSUES: dict[str, int] = {"GM": 1, "WM": 2, "CSF": 3}
#: Tissue names in label order.
TISSUE_NAMES: tuple[str, ...] = tuple(sorted(TISSUES, key=TISSUES.__getitem__))
#: Name of every label value, index = value (BIDS ``dseg.tsv``; 4 network classes).
LABEL_NAMES: tuple[str, ...] = ("background", *TISSUE_NAMES)
#: The tissues reported in the paper's Tables 1 and 2.
PAPER_TISSUES: tuple[str, ...] = ("GM", "WM")

#: In-distribution: the training box of acquisition parameters (paper §3).
IOD: str = "IoD"
#: Out-of-distribution: the wider box minus the training box (paper §3).
OOD: str = "OoD"
DISTRIBUTIONS: tuple[str, ...] = (IOD, OOD)


def distribution_name(name: str) -> str:
    """Canonical spelling (``"IoD"`` or ``"OoD"``) of a distribution name in any letter case.

    Raises
    ------
    ValueError
        For anything other than IoD / OoD.
    """
    for canonical in DISTRIBUTIONS:
        if isinstance(name, str) and name.lower() == canonical.lower():
            return canonical
    raise ValueError(f"unknown distribution {name!r}; choose one of {DISTRIBUTIONS} (any letter case)")


def stable_seed(*parts: object) -> int:
    """Deterministic 31-bit seed of ``parts`` (joined by ``/`` as strings): CRC-32 & 0x7FFFFFFF.

    The same on every platform, process and run; fits every seeding API used
    here (``torch``, ``numpy`` and ``random``).
    """
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF

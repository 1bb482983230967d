"""What a frozen result folder records about itself: checksums, code versions, profile hash, machine.

A reference folder ``results/<profile>/`` holds open-format files (CSV, JSON)
plus

* ``provenance.json``: commit (and whether the checkout was dirty), profile
  name, :meth:`~physeg.profiles.Profile.to_dict` and its hash
  (:func:`physeg.paths.config_hash`, 12 hex digits of SHA-256), the code
  versions that shape the numbers (:func:`code_versions`), the machine
  (:func:`machine`), wall time per stage and the date;
* ``SHA256SUMS``: one line ``<sha256>  <relative path>`` per file (the format
  of GNU ``sha256sum``, so ``sha256sum -c SHA256SUMS`` checks it too),
  ``provenance.json`` included, ``SHA256SUMS`` itself excluded.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from physeg.data.manifest import safe_relative_path, sha256_file
from physeg.io_safety import atomic_write_text
from physeg.paths import REPO_ROOT, config_hash

#: Where committed reference results live: ``results/<profile>/`` in the checkout.
RESULTS_ROOT: Path = REPO_ROOT / "results"
SUMS_FILE: str = "SHA256SUMS"
PROVENANCE_FILE: str = "provenance.json"
#: Layout version of a frozen folder (bump when files or provenance keys change meaning).
FREEZE_VERSION: int = 1


def code_versions(profile: Any | None = None) -> dict[str, str]:
    """Versions of the code that shape reference numbers: training, evaluation, plans, cohort generator.

    A change of any of them means a result frozen before no longer describes
    what the code computes now (:mod:`physeg.reference.status`). The cohort
    generator is the one ``profile`` names (:attr:`Profile.cohort_generator`; the
    code builds every version it lists), else the newest.
    """
    from physeg.data.cohort import GENERATOR_VERSION
    from physeg.evaluation.runs import EVALUATION_VERSION
    from physeg.models.plans import PLANS_VERSION
    from physeg.training.identity import TRAINING_VERSION

    return {"training": str(TRAINING_VERSION), "evaluation": str(EVALUATION_VERSION),
            "plans": str(PLANS_VERSION),
            "cohort_generator": str(GENERATOR_VERSION if profile is None else profile.cohort_generator)}


def profile_hash(profile: Any) -> str:
    """Hash of :meth:`Profile.to_dict` (:func:`physeg.paths.config_hash`): any changed setting changes it."""
    return config_hash(profile.to_dict())


def cpu_model() -> str:
    """CPU model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine of a run: CPU model, logical cores, GPU (if any), torch, Python, OS."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "gpu": gpu,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}"}


def write_json(path: Path, doc: Any) -> Path:
    """``doc`` as indented JSON, written atomically (:mod:`physeg.io_safety`)."""
    return atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def listed_files(folder: Path) -> list[str]:
    """Relative POSIX paths of every non-hidden file under ``folder`` except :data:`SUMS_FILE`."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() != SUMS_FILE:
            out.append(rel.as_posix())
    return out


def write_sums(folder: Path) -> Path:
    """Write ``folder/SHA256SUMS`` for every file of :func:`listed_files` (atomically)."""
    lines = [f"{sha256_file(folder / rel)}  {rel}" for rel in listed_files(folder)]
    return atomic_write_text(folder / SUMS_FILE, "\n".join(lines) + "\n")


def read_sums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/SHA256SUMS``.

    Raises ``FileNotFoundError`` when absent and ``ValueError`` naming the line
    for a malformed entry or a path leaving the folder.
    """
    path = folder / SUMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    sums = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{path}:{i}: expected '<sha256>  <path>', got {line!r}")
        safe_relative_path(rel, what=f"{path}:{i}")
        sums[rel] = digest
    return sums


def verify_sums(folder: Path) -> list[str]:
    """Problems of ``folder`` against its ``SHA256SUMS`` (empty: intact), each naming the file.

    ``altered`` (checksum differs), ``missing`` (listed, absent) and
    ``unlisted`` (present, not in ``SHA256SUMS``).
    """
    sums = read_sums(folder)
    problems = []
    for rel, digest in sorted(sums.items()):
        p = folder / rel
        if not p.is_file():
            problems.append(f"missing: {p}")
        elif sha256_file(p) != digest:
            problems.append(f"altered: {p} (sha256 differs from {SUMS_FILE})")
    problems += [f"unlisted: {folder / rel} (not in {SUMS_FILE})" for rel in listed_files(folder) if rel not in sums]
    return problems

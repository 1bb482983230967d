"""Which model segments which scan: ``--model`` given per sequence, once, or the shipped default.

``--model MPRAGE=FOLDER --model SPGR=FOLDER`` names one trained model folder
per sequence; ``--model FOLDER`` one folder, used for the sequence its
``plans.json`` was trained on. A sequence with no folder falls back on the
shipped weights when :mod:`physeg.inference.shipped` exists
(``resolve_default_model(sequence)``), else a scan of that sequence fails
with a message saying to pass ``--model SEQUENCE=FOLDER``.

Every model is identified in the outputs by its name and the SHA-256 of its
weights file (``best.pt``): a scan segmented with other weights is not
"current" and is segmented again.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from physeg.cli.errors import UsageError
from physeg.inference.model_folder import ModelInfo, load_network, pick_device, read_model_info

log = logging.getLogger(__name__)

#: The weights file of a trained model folder (:data:`physeg.training.checkpoint.BEST`).
WEIGHTS_FILE: str = "best.pt"


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (:func:`physeg.io_safety.sha256_file`)."""
    from physeg.io_safety import sha256_file

    return sha256_file(path)


def parse_model_specs(specs: list[str] | None) -> dict[str | None, Path]:
    """``["MPRAGE=a", "SPGR=b"]`` → ``{"MPRAGE": a, "SPGR": b}``; ``["a"]`` → ``{None: a}``.

    :class:`UsageError` for an unknown sequence, a sequence named twice, or
    more than one folder without a sequence.
    """
    from physeg.simulation.parameters import SEQUENCES

    out: dict[str | None, Path] = {}
    for spec in specs or []:
        key, sep, value = spec.partition("=")
        seq = key.strip().upper() if sep else None
        if seq is not None and seq not in SEQUENCES:
            raise UsageError(f"--model {spec!r}: sequence must be one of {', '.join(SEQUENCES)} (SEQUENCE=FOLDER)")
        if seq in out:
            raise UsageError(f"--model given twice for {seq or 'all sequences'}; give SEQUENCE=FOLDER once per sequence")
        out[seq] = Path(value if sep else spec)
    return out


def shipped_default(sequence: str, *, locations: Mapping[str, Path] | None = None) -> Path | None:
    """The shipped model folder for ``sequence``, or ``None`` when no shipped-weights registry exists.

    ``locations``: the registry's ``root``/``manifest_path`` keywords, resolved at the CLI edge
    (:func:`physeg.inference.shipped.locations_from_env`); ``None``: its defaults.
    """
    try:
        shipped = importlib.import_module("physeg.inference.shipped")
    except ModuleNotFoundError:
        return None
    resolve = getattr(shipped, "resolve_default_model", None)
    return Path(resolve(sequence, **dict(locations or {}))) if resolve is not None else None


@dataclass
class StudyModel:
    """A model folder in use: its :class:`ModelInfo`, weights checksum and (loaded on first use) predictor."""

    info: ModelInfo
    sha256: str
    device: Any
    #: SHA-256 of the calibration file in use (``None``: uncalibrated): a new calibration makes old outputs stale.
    calibration_sha256: str | None = None
    _predictor: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kind(self) -> str:
        """``"aleatoric"``, ``"epistemic"`` or ``"none"`` (deterministic)."""
        return self.info.plans.uncertainty

    def predictor(self):
        """The :class:`~physeg.inference.predictor.Predictor` of this model (loaded once)."""
        from physeg.inference.predictor import Predictor

        if self._predictor is None:
            self._predictor = Predictor.from_plans(load_network(self.info, device=self.device), self.info.plans)
        return self._predictor


def open_model(folder: str | Path, *, device: str = "auto", calibration: str | Path | None = None) -> StudyModel:
    """Read a model folder (plans, calibration) and checksum its weights; the network loads later."""
    info = read_model_info(folder, calibration=calibration)
    weights = info.folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UsageError(f"model folder {info.folder} has no {WEIGHTS_FILE}")
    source = info.calibration_source
    return StudyModel(info=info, sha256=sha256_of(weights), device=pick_device(device),
                      calibration_sha256=sha256_of(source) if source else None)


class ModelChooser:
    """Model per sequence from ``--model`` specs (module docstring); folders are opened on first use."""

    def __init__(self, specs: list[str] | None, *, device: str = "auto", calibration: str | Path | None = None,
                 shipped: Mapping[str, Path] | None = None):
        self.folders, self.shipped = parse_model_specs(specs), shipped
        if calibration is not None and len(self.folders) != 1:
            raise UsageError("--calibration needs exactly one --model (else put calibration.json in each model folder)")
        self.device, self.calibration = device, calibration
        self.by_sequence: dict[str, StudyModel] = {}
        for seq, folder in self.folders.items():
            model = open_model(folder, device=device, calibration=calibration)
            if seq is not None and model.info.sequence != seq:
                raise UsageError(f"--model {seq}={folder}: that model was trained on {model.info.sequence}, not {seq}")
            if model.info.sequence in self.by_sequence:
                raise UsageError(f"two --model folders for {model.info.sequence}")
            self.by_sequence[model.info.sequence] = model

    def for_sequence(self, sequence: str) -> StudyModel:
        """The model for ``sequence``: given, else shipped; :class:`UsageError` when there is none."""
        if sequence not in self.by_sequence:
            folder = shipped_default(sequence, locations=self.shipped)
            if folder is None:
                given = ", ".join(sorted(self.by_sequence)) or "none"
                raise UsageError(f"no model for {sequence} scans (models given for: {given}); "
                                 f"pass --model {sequence}=FOLDER")
            self.by_sequence[sequence] = open_model(folder, device=self.device)
            log.info("%s scans: shipped model %s", sequence, folder)
        return self.by_sequence[sequence]

"""Segment a BIDS study: participant level (per scan) and group level (table, report, protocol cards).

``physeg segment <bids_root>`` calls :func:`segment_study`. BIDS-Apps
conventions: the participant level segments the scans of the selected
participants (``participant_labels``; each job of a scheduler may take some
subjects, all writing into the same derivatives folder); the group level reads
every per-scan record there and writes ``volumes.tsv``, ``failures.tsv`` and
``report.html``; ``both`` (the default) runs one after the other.

Per scan (participant level): a scan whose outputs are current (same image
and sidecar bytes, model weights, samples and seed; see
:mod:`physeg.study.derivatives`) is skipped; otherwise it is segmented
(:func:`physeg.study.scan.segment_scan`) and its label map, probabilities,
QC figure and record are written, each through a temporary name, the record
last. A scan that fails (unreadable NIfTI, missing sidecar or parameter,
values in milliseconds, no model for its sequence, inference failure) gets a
failure record and the run goes on; the caller exits non-zero at the end.
An interrupted run (Ctrl-C, a killed job) leaves only whole files, and the
next run starts again at the first scan without a current record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from physeg.cli.errors import UsageError, message_of
from physeg.conventions import LABEL_NAMES
from physeg.data.acquisition import describe_values
from physeg.study import derivatives as dv
from physeg.study.discovery import Scan, find_scans, is_bids_root
from physeg.study.models import ModelChooser
from physeg.study.table import WIDE_INTERVAL

log = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("participant", "group", "both")


@dataclass
class StudyRun:
    """What a study run did: scans segmented, skipped (current) and failed, and the group files."""

    output: Path
    segmented: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: counts, and where the failures are listed."""
        n = len(self.segmented) + len(self.skipped) + len(self.failed)
        text = (f"{n} scans: {len(self.segmented)} segmented, {len(self.skipped)} skipped (current), "
                f"{len(self.failed)} failed")
        if self.failed:
            first = self.failed[0]
            text += f" (listed in {self.output / 'failures.tsv'}; first: {first['scan']}: {first['error']})"
        return text


def scan_record(scan: Scan, result, *, paths: dv.ScanPaths, out: Path, hashes: dict, key: dict) -> dict[str, Any]:
    """The per-scan JSON (BIDS ``Sources`` plus physeg's provenance and volumes)."""
    acq, model = result.acquisition, result.model
    return {
        "GeneratedBy": dv.PIPELINE, "Sources": [f"bids::{scan.relative}"], "scan": scan.relative,
        "participant_id": f"sub-{scan.subject}", "session_id": f"ses-{scan.session}" if scan.session else None,
        "sequence": acq.sequence, "protocol": f"{acq.sequence} {describe_values(acq.sequence, acq.values)}",
        "parameters": acq.bids(), "parameters_units": "InversionTime/RepetitionTime/EchoTime s, FlipAngle degrees",
        "in_distribution": result.in_distribution, "warnings": result.warnings,
        "model": {"name": model.name, "folder": str(model.info.folder), "sha256": model.sha256,
                  "uncertainty": model.kind, "voxel_size_mm": model.info.plans.voxel_size_mm,
                  "training_range": model.info.describe_range(), "calibration": model.info.calibration_source,
                  "calibration_sha256": model.calibration_sha256},
        "n_samples": result.n_samples, "run": key, "inputs_sha256": hashes, "seconds": round(result.seconds, 3),
        "volumes": result.volumes, "probseg_volumes": list(LABEL_NAMES),
        "dseg": paths.dseg.relative_to(out).as_posix(), "probseg": paths.probseg.relative_to(out).as_posix(),
        "qc": paths.qc.relative_to(out).as_posix(),
    }


def _write_scan(scan: Scan, result, *, paths: dv.ScanPaths, out: Path, hashes: dict, key: dict) -> None:
    """Label map, probabilities, QC figure, then the record (each atomically)."""
    import numpy as np

    from physeg.data.nifti import write_like
    from physeg.study.qc import qc_figure

    write_like(paths.dseg, result.labels, result.img, dtype=np.uint8)
    write_like(paths.probseg, result.probabilities, result.img, dtype=np.float32)
    acq = result.acquisition
    title = f"{scan.relative}  |  {acq.sequence} {describe_values(acq.sequence, acq.values)}" \
        + ("" if result.in_distribution else "  (OoD)")
    qc_figure(paths.qc, image=result.image, labels=result.labels, title=title, volumes=result.volumes)
    dv.write_json_atomic(paths.record, scan_record(scan, result, paths=paths, out=out, hashes=hashes, key=key))


def _one_scan(scan: Scan, *, out: Path, models: ModelChooser, n_samples: int, seed: int) -> bool:
    """Segment one scan unless current; returns whether it was skipped. Raises on failure."""
    from physeg.study.scan import segment_scan

    paths = dv.ScanPaths(out, scan)
    hashes, key = dv.input_hashes(scan), dv.run_key(n_samples=n_samples, seed=seed)
    rec = dv.read_record(paths)
    if rec is not None:
        model = models.for_sequence(rec["sequence"])
        if dv.is_current(paths, hashes=hashes, key=key, model_sha256=model.sha256,
                         calibration_sha256=model.calibration_sha256):
            dv.clear_failure(paths)
            return True
    result = segment_scan(scan.path, hint=scan.hint, models=models, n_samples=n_samples, seed=seed)
    _write_scan(scan, result, paths=paths, out=out, hashes=hashes, key=key)
    dv.clear_failure(paths)
    return False


def run_participants(scans: list[Scan], *, out: Path, models: ModelChooser, n_samples: int, seed: int,
                     progress: bool, run: StudyRun) -> None:
    """The participant level over ``scans`` (module docstring); fills ``run``."""
    from tqdm import tqdm

    for scan in tqdm(scans, desc="scans", unit="scan", disable=not progress):
        try:
            skipped = _one_scan(scan, out=out, models=models, n_samples=n_samples, seed=seed)
        except Exception as exc:  # noqa: BLE001  (one bad scan must not stop the study; reported below)
            error = " ".join((message_of(exc) or exc.__class__.__name__).split())
            if not isinstance(exc, UsageError) and exc.__class__.__name__ != "RuntimeFailure":
                error = f"{exc.__class__.__name__}: {error}"
            log.warning("%s failed: %s", scan.relative, error)
            dv.record_failure(dv.ScanPaths(out, scan), scan=scan, error=error)
            run.failed.append({"scan": scan.relative, "error": error})
            continue
        (run.skipped if skipped else run.segmented).append(scan.relative)
        log.info("%s %s", scan.relative, "current: skipped" if skipped else "segmented")


def run_group(out: Path, *, bids_root: Path, wide_interval: float = WIDE_INTERVAL, card_profile=None,
              device: str = "auto", progress: bool = False) -> dict[str, Path]:
    """The group level: ``volumes.tsv``, ``failures.tsv``, ``report.html`` from the records in ``out``.

    Records and failures of scans no longer in the BIDS dataset are left out (their files stay).
    """
    from physeg.study.report import write_report
    from physeg.study.table import study_table, write_study_tables

    recs = dv.read_records(out)
    records = [r for r in recs if (bids_root / str(r.get("scan"))).is_file()]
    failures = [f for f in dv.read_failures(out) if (bids_root / str(f.get("scan"))).is_file()]
    if len(records) < len(recs):
        log.warning("%d records in %s are of scans no longer in %s: left out of the table", len(recs) - len(records),
                    out, bids_root)
    cards = None
    if card_profile is not None:
        from physeg.study.protocol_card import protocol_cards

        cards = protocol_cards(records, profile=card_profile, device=device, progress=progress)
    table = study_table(records, wide_interval=wide_interval, cards=cards)
    files = write_study_tables(out, table=table, failures=failures)
    files["report"] = write_report(out / "report.html", table=table, failures=failures,
                                   qc={r["scan"]: r["qc"] for r in records})
    log.info("study table %s (%d scans, %d failed), report %s", files["volumes"], len(table), len(failures),
             files["report"])
    return files


def segment_study(bids_root: str | Path, *, output: str | Path | None = None, models: list[str] | None = None,
                  participant_labels: list[str] | None = None, analysis_level: str = "both",
                  n_samples: int = 50, seed: int = 0, device: str = "auto", calibration: str | Path | None = None,
                  card_profile=None, wide_interval: float = WIDE_INTERVAL, progress: bool = True,
                  shipped: Mapping[str, Path] | None = None) -> StudyRun:
    """Segment the T1-weighted scans of the BIDS dataset at ``bids_root`` (module docstring).

    ``models``: ``--model`` specs (``SEQUENCE=FOLDER`` or one ``FOLDER``);
    ``card_profile``: a :class:`~physeg.profiles.Profile` whose cohort gives
    the protocol cards (``None``: no cards); ``shipped``: where the shipped
    weights are (:func:`physeg.inference.shipped.locations_from_env`), used for a
    sequence without ``--model``. Everything the user gave is
    checked before anything is written. Failed scans are in the result's
    ``failed`` (the run does not raise for them).
    """
    bids_root = Path(bids_root)
    if not is_bids_root(bids_root):
        raise UsageError(f"{bids_root} is not a BIDS dataset (no dataset_description.json)")
    if analysis_level not in LEVELS:
        raise UsageError(f"analysis level must be one of {', '.join(LEVELS)}; got {analysis_level!r}")
    if n_samples < 1:
        raise UsageError(f"--samples must be >= 1; got {n_samples}")
    out = Path(output) if output is not None else dv.default_output(bids_root)
    run = StudyRun(output=out)
    scans: list[Scan] = []
    chooser = None
    if analysis_level != "group":
        scans = find_scans(bids_root, participant_labels=participant_labels)
        if not scans:
            raise UsageError(f"no T1-weighted images (sub-*/[ses-*/]anat/*_T1w.nii[.gz]) in {bids_root}")
        chooser = ModelChooser(models, device=device, calibration=calibration, shipped=shipped)
    dv.init_output_root(out, bids_root=bids_root)
    if chooser is not None:
        run_participants(scans, out=out, models=chooser, n_samples=n_samples, seed=seed, progress=progress, run=run)
    if analysis_level != "participant":
        run.files = run_group(out, bids_root=bids_root, wide_interval=wide_interval, card_profile=card_profile,
                              device=device, progress=progress)
    return run

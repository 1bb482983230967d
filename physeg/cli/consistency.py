"""``physeg consistency``: agreement of repeated scans of the same subjects (CoV, ICC, Bland–Altman)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  # the study table of a physeg BIDS run; outputs in DERIV/consistency/
  physeg consistency BIDS_ROOT/derivatives/physeg

  # any table with participant_id and GM_ml, WM_ml, CSF_ml columns, outputs elsewhere
  physeg consistency volumes.tsv --output consistency/ --force

outputs (in --output, default <folder of volumes.tsv>/consistency):
  consistency.tsv           per tissue: subjects, scans, mean and max CoV (%), ICC(1,1) with 95% CI,
                            Bland-Altman bias and 95% limits of agreement (ml)
  consistency_subjects.tsv  per subject and tissue: scans, mean, SD (ml), CoV (%)
  bland_altman.png          difference vs mean of each subject's first two scans, per tissue
exit codes: 0 ok, 2 usage error (no table, no subject with two scans, existing outputs), 1 runtime failure.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "consistency",
        help="repeated scans of the same subjects: per-tissue CoV, ICC and Bland-Altman plots",
        description="Agreement of the tissue volumes of subjects scanned more than once (sessions or protocols), "
                    "from the study table of `physeg segment BIDS_ROOT`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="DERIVATIVES_OR_TSV", help="physeg derivatives folder or a volumes.tsv")
    parser.add_argument("--output", "-o", metavar="DIR", help="output folder (default: consistency/ next to "
                        "volumes.tsv)")
    parser.add_argument("--force", action="store_true", help="replace existing outputs of the same names")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from physeg.cli.errors import check_outputs, run_cli
    from physeg.study.consistency import OUTPUT_FILES, consistency, read_volumes, write_consistency

    def work() -> None:
        import logging

        table = read_volumes(args.source)
        src = Path(args.source)
        out = Path(args.output) if args.output else (src if src.is_dir() else src.parent) / "consistency"
        check_outputs(out, [out / f for f in OUTPUT_FILES], force=args.force)
        result = consistency(table)
        files = write_consistency(result, out)
        logging.getLogger("physeg.cli").info("consistency of %d subjects: %s", int(result.summary["n_subjects"].max()),
                                             ", ".join(str(f) for f in files.values()))

    return run_cli("consistency", work)

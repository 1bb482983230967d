"""``physeg models list``: the model weights shipped with physeg, what they were trained on and how they validated."""

from __future__ import annotations

import argparse
import math
from typing import Any

from physeg.cli.errors import run_cli, usage_errors

EPILOG = """\
examples:
  physeg models list                 shipped models: sequence, model, training profile, voxel size,
                                     parameter ranges, validation Dice, default for `physeg segment`
  physeg models list --verify        also check every shipped file's sha256 against the manifest

Shipped weights live in physeg/weights/ ($PHYSEG_WEIGHTS) with sha256 in data_manifest.yaml
($PHYSEG_WEIGHTS_MANIFEST); add some with `physeg reference ship --from MODEL_FOLDER`.
exit codes: 0 ok, 2 malformed manifest, 1 a shipped file fails verification.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model weights shipped with physeg",
                                   description=__doc__, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lister = sub.add_parser("list", help="shipped models and their training and validation figures")
    lister.add_argument("--verify", action="store_true", help="check each shipped file's sha256")
    lister.set_defaults(func=run)


def describe_ranges(ranges: dict[str, Any]) -> str:
    """Training parameter box in user units: ``TI 600–1200 ms``, ``FA 5–30°`` (stored in s and rad)."""
    return ", ".join(f"FA {math.degrees(lo):.3g}–{math.degrees(hi):.3g}°" if name == "FA"
                     else f"{name} {1000 * lo:.4g}–{1000 * hi:.4g} ms" for name, (lo, hi) in ranges.items())


def rows(models: dict[str, Any], *, defaults: set[str]) -> list[dict[str, str]]:
    """One printable row per shipped model (see :func:`run`)."""
    out = []
    for key, m in sorted(models.items()):
        r = m.record
        val = r.get("validation") or {}
        dice = "/".join(f"{val[k]:.2f}" for k in ("val_dice_GM", "val_dice_WM", "val_dice_CSF") if k in val) or "–"
        size = sum(int(f.get("size", 0)) for f in r["files"].values())
        out.append({"sequence": m.sequence, "model": m.model + (" (default)" if key in defaults else ""),
                    "profile": str(r.get("profile")), "voxel_mm": f"{float(r.get('voxel_size_mm', float('nan'))):g}",
                    "ranges": describe_ranges(r.get("training_ranges") or {}), "val Dice GM/WM/CSF": dice,
                    "MB": f"{size / 1e6:.2f}"})
    return out


def run(args: argparse.Namespace) -> int:
    from physeg.inference import shipped

    def work() -> None:
        where = shipped.locations_from_env()
        with usage_errors(ValueError, FileNotFoundError):
            models = shipped.registry(**where)
        if not models:
            print(f"no model weights are shipped in {where['root']} (manifest {where['manifest_path']}); "
                  "`physeg segment` needs --model FOLDER")
            return
        defaults = {shipped.default_for(models.values(), sequence=seq).key for seq in {m.sequence for m in models.values()}}
        if args.verify:
            for m in models.values():
                shipped.verify_shipped(m)
        table = rows(models, defaults=defaults)
        widths = {k: max(len(k), *(len(r[k]) for r in table)) for k in table[0]}
        print("  ".join(k.ljust(w) for k, w in widths.items()))
        for r in table:
            print("  ".join(r[k].ljust(w) for k, w in widths.items()))
        total = sum(float(r["MB"]) for r in table)
        print(f"{len(table)} shipped model(s), {total:.2f} MB in {where['root']}")

    return run_cli("models list", work)

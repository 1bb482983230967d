"""Per-scan QC figure: three orthogonal slices with the label overlay, volumes and intervals in the title.

The slices cross at the centre of mass of the brain labels (voxels with a
label > 0; the image centre when there are none), displayed in voxel axes
(the first axis horizontal in the sagittal/coronal views, as stored; no
reorientation). Colours: GM red, WM blue, CSF green, 50 % opaque.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from physeg.conventions import TISSUES
from physeg.io_safety import atomic_write

#: RGBA per label: background transparent, GM, WM, CSF.
LABEL_COLOURS: tuple[tuple[float, float, float, float], ...] = (
    (0, 0, 0, 0), (0.9, 0.2, 0.2, 0.5), (0.2, 0.4, 0.9, 0.5), (0.2, 0.8, 0.3, 0.5))


def slice_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """Voxel indices of the centre of mass of ``labels > 0`` (the array centre when empty)."""
    idx = np.argwhere(labels > 0)
    if idx.size == 0:
        return tuple(int(s) // 2 for s in labels.shape)
    return tuple(int(round(v)) for v in idx.mean(0))


def volumes_title(volumes: Mapping[str, Mapping[str, Any]]) -> str:
    """``GM 512.3 ml [500.1, 520.9] (95%: [480, 540])`` per tissue, one line each."""
    lines = []
    for t in TISSUES:
        v = volumes[t]
        lines.append(f"{t} {v['median_ml']:.1f} ml  50%: [{v['p50_low_ml']:.1f}, {v['p50_high_ml']:.1f}]  "
                     f"95%: [{v['p95_low_ml']:.1f}, {v['p95_high_ml']:.1f}]")
    return "\n".join(lines)


def qc_figure(path: str | Path, *, image: np.ndarray, labels: np.ndarray, title: str,
              volumes: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write the QC PNG of one scan at ``path`` (temporary name, then rename); returns ``path``."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone

    path = Path(path)
    cmap = ListedColormap(LABEL_COLOURS)
    c = slice_centre(labels)
    views = [(image[c[0]], labels[c[0]], "sagittal"), (image[:, c[1]], labels[:, c[1]], "coronal"),
             (image[:, :, c[2]], labels[:, :, c[2]], "axial")]
    vmax = float(np.percentile(image, 99.5)) if image.size else 1.0
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 3)
    for ax, (img, lab, name) in zip(axes, views):
        ax.imshow(img.T, cmap="gray", origin="lower", vmin=0, vmax=vmax or 1.0)
        ax.imshow(lab.T, cmap=cmap, vmin=0, vmax=3, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{title}\n{volumes_title(volumes)}", fontsize=8, family="monospace")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))

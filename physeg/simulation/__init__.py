"""MRI simulation from quantitative maps (paper §2.3).

Public API (seconds and radians inside; degrees only at the edge):

- :data:`MAP_CHANNELS`, :data:`PARAMETER_NAMES`, :data:`IOD_RANGES`, :data:`OOD_RANGES`
- :func:`mprage`, :func:`spgr` -- the static signal equations (broadcasting)
- :func:`sample_parameters`, :func:`physics_features`, :func:`n_physics_features`,
  :func:`is_in_distribution`, :func:`validate_parameters`, :func:`mprage_params`,
  :func:`spgr_params`
- :func:`simulate`, :class:`SimulationLayer`, :class:`SimulateMRI` (TorchIO)
- :data:`TISSUE_PARAMETERS` -- literature relaxometry of WM/GM/CSF
"""

from .equations import (
    EPS_S,
    MPRAGE_SIGNS,
    MPRAGE_TAU_S,
    MPRAGE_TD_S,
    clean_maps,
    ernst_angle,
    mprage,
    mprage_zero_crossing,
    spgr,
)
from .layer import (
    MAP_CHANNELS,
    NORMALISATION_CLIP,
    NORMALISATION_PERCENTILE,
    SimulationLayer,
    check_maps,
    maps_from_subject,
    normalise_intensity,
    simulate,
)
from .parameters import (
    IOD_RANGES,
    OOD_RANGES,
    PARAMETER_NAMES,
    PARAMETER_UNITS,
    PHYSICS_FEATURE_NAMES,
    SEQUENCES,
    check_sequence,
    is_in_distribution,
    is_in_range,
    mprage_params,
    n_parameters,
    n_physics_features,
    physics_features,
    sample_parameters,
    spgr_params,
    to_display_units,
    validate_parameters,
)
from .tissues import TISSUE_PARAMETERS, TissueParameters


def __getattr__(name: str):
    """Import the TorchIO adapter :class:`SimulateMRI` only when it is asked for.

    Importing TorchIO imports ``tqdm.auto``, which inside a Jupyter kernel
    without ipywidgets writes a ``TqdmWarning`` to stderr; nothing but the
    TorchIO adapter needs TorchIO, so plain ``import physeg.simulation`` stays
    free of it.
    """
    if name == "SimulateMRI":
        from .transforms import SimulateMRI

        return SimulateMRI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EPS_S", "MPRAGE_SIGNS", "MPRAGE_TAU_S", "MPRAGE_TD_S", "clean_maps", "ernst_angle", "mprage",
    "mprage_zero_crossing", "spgr",
    "MAP_CHANNELS", "NORMALISATION_CLIP", "NORMALISATION_PERCENTILE", "SimulationLayer", "check_maps",
    "maps_from_subject", "normalise_intensity", "simulate",
    "IOD_RANGES", "OOD_RANGES", "PARAMETER_NAMES", "PARAMETER_UNITS", "PHYSICS_FEATURE_NAMES", "SEQUENCES",
    "check_sequence", "is_in_distribution", "is_in_range", "mprage_params", "n_parameters",
    "n_physics_features", "physics_features", "sample_parameters", "spgr_params", "to_display_units",
    "validate_parameters",
    "TISSUE_PARAMETERS", "TissueParameters",
    "SimulateMRI",
]

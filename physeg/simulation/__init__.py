"""MRI simulation from quantitative maps (paper §2.3).

Public API (seconds and radians inside; degrees only at the edge):

- :data:`MAP_CHANNELS`, :data:`PARAMETER_NAMES`, :data:`IOD_RANGES`, :data:`OOD_RANGES`
- :func:`mprage`, :func:`spgr` -- the static signal equations (broadcasting)
- :func:`sample_parameters`, :func:`physics_features`, :func:`n_physics_features`,
  :func:`is_in_distribution`, :func:`validate_parameters`, :func:`mprage_params`,
  :func:`spgr_params`
- :func:`simulate`, :class:`SimulationLayer`, :class:`SimulateMRI` (TorchIO)
- :data:`TISSUE_PARAMETERS` -- literature relaxometry of WM/GM/CSF
- :data:`REGISTRY`, :func:`get_sequence` -- the sequence registry (MPRAGE, SPGR, MP2RAGE, MESPGR)
- :class:`Artefacts` -- B1+, receive bias and Rician noise ranges drawn per realisation
"""

#: Public name -> submodule that defines it. Nothing is imported until a name is used, so that
#: ``import physeg.simulation.sequences`` (the registry's names, flags and ranges, for the CLI
#: parser) does not import torch.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("EPS_S", "MPRAGE_SIGNS", "MPRAGE_TAU_S", "MPRAGE_TD_S", "clean_maps", "ernst_angle", "mprage",
                     "mprage_zero_crossing", "spgr"), "equations"),
    **dict.fromkeys(("MAP_CHANNELS", "NORMALISATION_CLIP", "NORMALISATION_PERCENTILE", "SimulationLayer",
                     "check_maps", "maps_from_subject", "normalise_intensity", "simulate"), "layer"),
    **dict.fromkeys(("IOD_RANGES", "OOD_RANGES", "PARAMETER_NAMES", "PARAMETER_UNITS", "PHYSICS_FEATURE_NAMES",
                     "SEQUENCES", "check_sequence", "is_in_distribution", "is_in_range", "mprage_params",
                     "n_parameters", "n_physics_features", "physics_features", "sample_parameters", "spgr_params",
                     "to_display_units", "validate_parameters"), "parameters"),
    **dict.fromkeys(("TISSUE_PARAMETERS", "TissueParameters"), "tissues"),
    **dict.fromkeys(("ArtefactDraw", "Artefacts", "SmoothField"), "artefacts"),
    **dict.fromkeys(("OUTPUT_MODES", "REGISTRY", "SequenceSpec", "get_sequence"), "sequences"),
    "SimulateMRI": "transforms",
}


_SUBMODULES: tuple[str, ...] = ("artefacts", "benchmark", "equations", "generic", "kernels", "layer", "maps",
                                 "normalisation", "parameters", "phantom", "sequences", "tissues", "transforms")


def __getattr__(name: str):
    """Import the submodule defining ``name`` on first use (see :data:`_EXPORTS`).

    In particular the TorchIO adapter :class:`SimulateMRI`: importing TorchIO
    imports ``tqdm.auto``, which inside a Jupyter kernel without ipywidgets
    writes a ``TqdmWarning`` to stderr, so only asking for it imports TorchIO.
    """
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    if name != "SimulateMRI":
        globals()[name] = value
    return value


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
    "ArtefactDraw", "Artefacts", "SmoothField", "OUTPUT_MODES", "REGISTRY", "SequenceSpec", "get_sequence",
]

"""A stand-in for SimpleITK on the lent GPU machine, where the real wheel (52 MB) does not fit the transfer.

TorchIO imports SimpleITK in many modules and uses its names in type aliases,
but the TorchIO training arm (``physeg.training.augmentation``: RandomBiasField
and RandomNoise on tensors) never calls it. Every name here is a class that
can appear in a type expression and raises as soon as it is called or
instantiated, so a code path that really needs SimpleITK fails loudly instead
of computing something else. ``scripts/gpu_reference_long.sh`` puts this folder
on ``PYTHONPATH`` only where ``import SimpleITK`` fails. Never installed with
physeg.
"""


class _MissingMeta(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _missing(f"{cls.__name__}.{attr}")


def _missing(name: str) -> type:
    def refuse(cls, *args, **kwargs):
        raise RuntimeError(f"SimpleITK is not installed on this machine ({name} was called); "
                           "only a stand-in for TorchIO's imports is")

    return _MissingMeta(name, (), {"__new__": refuse})


def __getattr__(name: str) -> type:
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(f"SimpleITK.{name}")

"""Sub-commands of the ``physeg`` CLI; each module exposes ``register(subparsers)``."""

#: Modules under ``physeg.commands`` registered by :func:`physeg.cli.build_parser`, in help order.
COMMANDS: tuple[str, ...] = (
    "paper",
    "data",
    "pgs",
    "simulate",
    "segment",
    "train",
)

"""``physeg paper``: execute every notebook with papermill and build the site."""

from __future__ import annotations

import argparse

from physeg.reproduce import runner as paper


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "paper",
        help="execute the notebooks (papermill) and build the offline site",
        description=paper.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    paper.add_arguments(parser)
    parser.set_defaults(func=paper.run_from_args)

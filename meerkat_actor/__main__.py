"""`python -m meerkat_actor` / `meerkat-actor`: the command-line entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from ._actor import open_store
from ._demo import run_demo


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meerkat-actor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run a small agent-host workload on an in-memory store and summarise it"
    )
    demo.add_argument("--runtimes", type=_positive, default=4, help="runtimes (default 4)")
    demo.add_argument("--runs", type=_positive, default=5, help="runs per runtime (default 5)")
    demo.add_argument("--inputs", type=_positive, default=3, help="inputs per run (default 3)")
    return parser


async def _demo(args: argparse.Namespace) -> None:
    async with open_store() as store:
        await run_demo(store, runtimes=args.runtimes, runs=args.runs, inputs_per_run=args.inputs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        trio.run(_demo, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

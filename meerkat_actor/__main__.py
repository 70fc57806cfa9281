"""`python -m meerkat_actor` / `meerkat-actor`: the command-line entry point."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import trio

from ._actor import ActorStore, open_store
from ._demo import read_everything, run_demo
from ._ids import LogicalRuntimeId


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


DEFAULT_DEMO_DIR = "meerkat-demo-store"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meerkat-actor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a small agent-host workload on a durable store, reopen it, and summarise it",
    )
    demo.add_argument(
        "dir",
        nargs="?",
        default=DEFAULT_DEMO_DIR,
        help=f"the store directory (default ./{DEFAULT_DEMO_DIR}; created if missing)",
    )
    demo.add_argument("--memory", action="store_true", help="use an in-memory store instead")
    demo.add_argument("--runtimes", type=_positive, default=4, help="runtimes (default 4)")
    demo.add_argument("--runs", type=_positive, default=5, help="runs per runtime (default 5)")
    demo.add_argument("--inputs", type=_positive, default=3, help="inputs per run (default 3)")
    return parser


async def _count_inputs(store: ActorStore, runtimes: int) -> int:
    names = (LogicalRuntimeId(f"agent-{n}") for n in range(1, runtimes + 1))
    return sum([len(await store.load_input_states(name)) for name in names])


async def _demo(args: argparse.Namespace) -> int:
    counts = {"runtimes": args.runtimes, "runs": args.runs, "inputs_per_run": args.inputs}
    if args.memory:
        print("store: in memory")
        async with open_store() as store:
            await run_demo(store, **counts)
        return 0
    path = args.dir
    print(f"store: {path}")
    async with open_store(path) as store:
        held = [
            len(await store.load_input_states(LogicalRuntimeId(f"agent-{n}")))
            for n in range(1, args.runtimes + 1)
        ]
        if any(held):
            print(f"recovered from earlier runs: {sum(held)} input states")
        else:
            print("a new store")
        receipts = await run_demo(store, **counts)
        before = await read_everything(store, receipts)
    async with open_store(path) as store:
        after = await read_everything(store, receipts)
        inputs = await _count_inputs(store, args.runtimes)
    if after != before:
        print("reopened: the store does NOT hold what was acknowledged", file=sys.stderr)
        return 1
    print(
        f"reopened: every acknowledged write is back ({len(receipts)} receipts of this run,"
        f" {inputs} input states); run the demo again to add to it"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        args.dir = os.path.abspath(args.dir)
        return trio.run(_demo, args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

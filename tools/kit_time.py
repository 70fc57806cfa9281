"""CPU and wall time of the conformance machine on the shipped stores.

    python tools/kit_time.py                    # this checkout
    PYTHONPATH=/path/to/other/checkout python tools/kit_time.py
    python tools/kit_time.py durable            # one store only

Runs `RuntimeStoreMachine` for 40 test cases of 40 steps, with each of the
seeds 1 to 5 (the cost of a test case varies a lot with the rules drawn:
one sample of 40 says little), against the in-memory store and the durable
store, and prints each one's total wall and CPU seconds (CPU is the
steadier figure on a shared machine). Used for issue 13's CI-time budget:
run it at two commits and compare.

On a shared machine one commit's figure varies by 15 % from run to run;
run the two commits at once, each pinned to a CPU of its own, then again
with the CPUs swapped, and compare the sums:

    PYTHONPATH=A taskset -c 0 python tools/kit_time.py in-memory &
    PYTHONPATH=B taskset -c 1 python tools/kit_time.py in-memory; wait
"""

from __future__ import annotations

import resource
import sys
import time

from hypothesis import HealthCheck, seed, settings
from hypothesis.stateful import run_state_machine_as_test

import meerkat_actor as ma
from meerkat_actor.testing import RuntimeStoreMachine


class InMemory(RuntimeStoreMachine):
    open_store = staticmethod(ma.open_store)


class Durable(RuntimeStoreMachine):
    open_store_at = staticmethod(ma.open_store)


SEEDS = range(1, 6)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    print(f"meerkat_actor from {ma.__file__}")
    config = settings(
        max_examples=40,
        stateful_step_count=40,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    stores = {"in-memory": InMemory, "durable": Durable}
    chosen = sys.argv[1:] or list(stores)
    unknown = [name for name in chosen if name not in stores]
    if unknown:
        sys.exit(f"unknown store {unknown[0]!r}: choose from {', '.join(stores)}")
    for machine in (stores[name] for name in chosen):
        wall, cpu = time.monotonic(), _cpu()
        for n in SEEDS:
            run_state_machine_as_test(seed(n)(machine), settings=config)
        print(
            f"{machine.__name__:8} wall {time.monotonic() - wall:5.1f} s"
            f"  cpu {_cpu() - cpu:5.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""`python -m meerkat_actor._bench child SPEC`: one measurement in a fresh process.

Internal: the benchmark's parent runs each store open (and the memory
measurements) through this entry point, so that time and peak memory are
the child's own. Prints one JSON line. Not a user command: run
`meerkat-actor bench` instead.
"""

import sys

from ._children import child_main
from ._recovery import MEASUREMENTS as RECOVERY
from ._retention import MEASUREMENTS as RETENTION
from ._shared import MEASUREMENTS as SHARED

sys.exit(child_main(sys.argv[1:], {**RECOVERY, **RETENTION, **SHARED}))

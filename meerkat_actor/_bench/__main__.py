"""`python -m meerkat_actor._bench child SPEC`: one measurement in a fresh process.

Internal: the benchmark's parent runs each store open (and the memory
measurements) through this entry point, so that time and peak memory are
the child's own. Prints one JSON line. Not a user command: run
`meerkat-actor bench` instead.
"""

import sys

from ._recovery import child_main

sys.exit(child_main(sys.argv[1:]))

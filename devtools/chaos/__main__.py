"""`python -m devtools.chaos`: the chaos run (devtools/chaos/run.py)."""

import sys

from devtools.chaos.run import main

sys.exit(main())

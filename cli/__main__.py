"""`python -m cli ...` is `smeledger ...`."""

import sys

from cli.main import main

sys.exit(main())

"""`python -m hil.cli`: the `hil` command."""

import sys

from hil.cli.app import main

sys.exit(main())

"""`python -m sendguard` runs the command line."""

import sys

from sendguard.cli import main

sys.exit(main())

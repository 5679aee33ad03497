"""`python -m notifier COMMAND`: see notifier/cli.py."""

import sys

from notifier.cli import main

sys.exit(main())

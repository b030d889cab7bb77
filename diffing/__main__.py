"""``python -m diffing`` runs the CLI."""

import sys

from diffing.cli.main import main

sys.exit(main())

"""``python -m modelserve`` is the ``modelserve`` command."""

import sys

from modelserve.cli import main

sys.exit(main())

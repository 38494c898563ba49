"""``python -m modelserve.stack HANDLER ...`` is ``modelserve stack HANDLER ...``."""

import sys

from modelserve.stack.command import main

sys.exit(main())

"""``python -m modelserve.coupled HANDLER --model_base_path=... --workers=N``."""

import sys

from modelserve.coupled.command import main

sys.exit(main())

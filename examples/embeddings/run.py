"""Run this example with one command (see ../run_example.py):

python examples/embeddings/run.py [--workers N] [--worker-class sync|gthread|gevent|asyncio] [--nginx]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run_example import main  # examples/run_example.py, importable once its folder is on the path

if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parent))

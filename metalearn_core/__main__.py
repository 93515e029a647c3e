"""``python -m metalearn_core``: reproduce the book's experiments and re-evaluate shipped checkpoints."""

import sys

from .cli import main

sys.exit(main())

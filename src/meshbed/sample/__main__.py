"""``python -m meshbed.sample``: see :mod:`meshbed.sample.config` for flags."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m streammix.cli``."""

import sys

from . import main

sys.exit(main())

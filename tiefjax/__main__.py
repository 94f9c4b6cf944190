"""``python -m tiefjax`` is the same as the ``tiefjax`` command."""

import sys

from tiefjax.cli import main

sys.exit(main())

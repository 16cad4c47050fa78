"""``python -m opal_broadcast``: the same as the ``opal-broadcast`` command."""

import sys

from ._cli import main

sys.exit(main())

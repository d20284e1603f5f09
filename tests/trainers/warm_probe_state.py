"""Module state set at import: which process imported it (see `warm_probe`)."""

import os

IMPORTED_IN = os.getpid()

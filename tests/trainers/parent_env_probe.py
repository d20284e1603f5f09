"""Imported by a warm trainer's preloading parent (`preload`): writes the parent's environment
to the file `PARENT_ENV_PROBE` names, so a test can check what the parent itself was given."""

from __future__ import annotations

import json
import os
from pathlib import Path

_target = os.environ.get("PARENT_ENV_PROBE")
if _target:
    Path(_target).write_text(json.dumps(dict(os.environ)))

"""``python -m autoweave_plugins``: the same as the ``autoweave-plugins`` command."""

from __future__ import annotations

import sys

from autoweave_plugins.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m worldstereo``: the ``worldstereo`` command (what ``torchrun ... -m worldstereo`` runs)."""

import sys

from worldstereo.cli import main

if __name__ == "__main__":
    sys.exit(main())

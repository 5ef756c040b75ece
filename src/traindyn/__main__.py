"""`python -m traindyn` is the `traindyn` command."""

import sys

from .cli import main

sys.exit(main())

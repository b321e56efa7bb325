"""``python -m equal.cli``."""

from . import main

raise SystemExit(main())

"""``python -m hooked`` is the ``hooked`` command line."""

from hooked.cli import main

raise SystemExit(main())

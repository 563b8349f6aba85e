"""``python -m mlguard`` is the ``mlguard`` command."""

from mlguard.cli import main

raise SystemExit(main())

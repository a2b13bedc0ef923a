"""``python -m node`` is the ``creditnet`` command."""

from node.cli import main

raise SystemExit(main())

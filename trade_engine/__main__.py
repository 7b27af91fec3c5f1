"""``python -m trade_engine`` runs the command-line interface."""

from trade_engine.cli import main

raise SystemExit(main())

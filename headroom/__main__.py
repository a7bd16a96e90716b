"""`python -m headroom` runs the command line."""

from headroom.cli import main

raise SystemExit(main())

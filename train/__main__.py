"""`python -m webtext.train SUBCOMMAND ...` (also under torchrun)."""
from .cli import main

raise SystemExit(main())

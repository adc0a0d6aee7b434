"""`python -m webtext.train SUBCOMMAND ...` (also under torchrun)."""
from webtext.train.cli import main

raise SystemExit(main())

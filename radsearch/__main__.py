"""`python -m radsearch` runs the CLI."""

from radsearch.cli import main

main()

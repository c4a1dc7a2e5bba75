"""`python -m hvit_sweeps` runs the CLI."""

from hvit_sweeps.cli import main

main()

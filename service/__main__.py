"""``python -m polycert``: the command line."""

from polycert.cli import main

main()

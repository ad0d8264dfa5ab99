"""``python -m cvtransfer``."""

from cvtransfer.cli import main

main()

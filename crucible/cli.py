"""The `crucible` command-line client (see `crucible --help`)."""

import sys


def main(argv=None) -> int:
    print("crucible: command-line client not built yet", file=sys.stderr)
    return 2

"""`ltx2train data scan` as a script: `python data_tools/scan.py --help` (thin entry point over ltx2train.data)."""

import sys

from ltx2train.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "scan", *sys.argv[1:]]))

"""`ltx2train data prepare` as a script: `python data_tools/prepare.py --help` (thin entry point over ltx2train.data)."""

import sys

from ltx2train.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "prepare", *sys.argv[1:]]))

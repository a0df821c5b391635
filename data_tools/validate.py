"""`ltx2train data validate` as a script: `python data_tools/validate.py --help` (thin entry point over ltx2train.data)."""

import sys

from ltx2train.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "validate", *sys.argv[1:]]))

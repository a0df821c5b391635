import sys

from ltx2train.cli import main

sys.exit(main())

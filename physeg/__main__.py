import sys

from physeg.cli import main

sys.exit(main())

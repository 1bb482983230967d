import sys

from physeg.cli.main import main

sys.exit(main())

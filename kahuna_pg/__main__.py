import sys

from kahuna_pg.cli import main

sys.exit(main())

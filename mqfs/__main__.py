import sys

from mqfs.cli import main

sys.exit(main())

import sys

from restorer.cli import main

sys.exit(main())

import sys

from mrinets.cli import main

sys.exit(main())

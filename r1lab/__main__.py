import sys

from r1lab.cli import main

sys.exit(main())

import sys

from streamal.cli import main

sys.exit(main())

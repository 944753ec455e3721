import sys

from antigv.cli.main import main

sys.exit(main())

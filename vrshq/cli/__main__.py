import sys

from vrshq.cli import main

sys.exit(main())

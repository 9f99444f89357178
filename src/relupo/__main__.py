import sys

from relupo.cli import main

sys.exit(main())

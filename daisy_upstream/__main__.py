import sys

from daisy_upstream.cli import main

sys.exit(main())

"""``python -m segue_testkit.cluster``: see segue_testkit.cluster.cli."""

import contextlib
import sys

from segue_testkit.cluster.cli import main

with contextlib.suppress(KeyboardInterrupt):
    sys.exit(main())

"""``python -m segue_testkit.trafficsim``: see segue_testkit.trafficsim.cli."""

import sys

from segue_testkit.trafficsim.cli import main

sys.exit(main())

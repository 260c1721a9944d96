"""The test world's Definitions as a code location, loaded the way Dagster's daemon loads code.

The world's state folder comes from FLIGHTLINE_TEST_WORLD, which tests/integration/backfill.run_backfill
sets before it loads (or reloads) this module.
"""

import os
from pathlib import Path

from tests.conftest import world_definitions

defs, _ = world_definitions(Path(os.environ["FLIGHTLINE_TEST_WORLD"]))

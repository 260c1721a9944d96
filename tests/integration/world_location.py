"""The test world's Definitions as a code location, loaded the way Dagster's daemon loads code.

The world's state folder comes from FLIGHTLINE_TEST_WORLD, set by the test before the first load (a code
location is a module: it is imported once per process).
"""

import os
from pathlib import Path

from tests.conftest import world_definitions

defs, _ = world_definitions(Path(os.environ["FLIGHTLINE_TEST_WORLD"]))

"""`python -m loop COMMAND`: the edge cases and the review queue, candidates, the gate, promote and roll back."""

import sys

from loop import commands

sys.exit(commands.main())

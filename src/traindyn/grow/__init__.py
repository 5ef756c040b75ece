"""Growth operators, LAG early prediction and adaptive gradual stacking (the lag study).

Light at import (no torch): ``plans`` is plain data; ``ops`` (operators), ``callbacks``
(the loop hooks), ``grid``, ``analysis`` and ``study`` are imported by name.
"""

from .plans import (
    DEPTH_STRATEGIES,
    STRATEGIES,
    depth_plan,
    duplicate_plan,
    grown_depth,
    plan_string,
)

__all__ = ["DEPTH_STRATEGIES", "STRATEGIES", "depth_plan", "duplicate_plan", "grown_depth", "plan_string"]

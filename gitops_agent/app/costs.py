"""What gitops-agent costs, as `init`, `run --help` and the README state it.

``QUESTION_USD`` is measured, not guessed: bench/question_cost.py (P10 in bench/RESULTS.md) asks
the 29 dabench questions through the engine and the anthropic SDK to a server that counts tokens
as the Messages API does, with the default models at their list prices, answered in the fewest
turns. tests/bench/test_question_cost.py re-measures a few questions and fails when this figure
drifts from what the engine really sends.
"""

from __future__ import annotations

# median cost of a dabench question answered at the first try, default models (P10)
QUESTION_USD = 0.01


def idle_day_minutes(cron: str) -> int:
    """Jobs a day of a five-field cron (minute and hour fields: *, */N, N, or N,M): on GitHub-hosted
    runners each quiet job bills one minute."""
    import math

    def count(field: str, size: int) -> int:
        if field == "*":
            return size
        if field.startswith("*/"):
            return math.ceil(size / int(field[2:]))
        return len(field.split(","))

    minute, hour, *_ = cron.split()
    return count(minute, 60) * count(hour, 24)

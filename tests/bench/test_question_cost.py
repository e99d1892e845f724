"""The cost of a question that `init`, `run --help` and the README state (gitops_agent/app/costs.py)
is what the engine really sends: three dabench questions through the anthropic SDK to a server
that counts tokens as the Messages API does, priced at the default models' list prices."""

from __future__ import annotations

import re

from bench import question_cost
from gitops_agent.app.costs import QUESTION_USD


def test_the_stated_cost_of_a_question_is_what_the_engine_sends():
    sec = question_cost.measure(n=3)
    row = next(r for r in sec.rows if r.measure.startswith("P10 cost of a question"))
    median = float(re.search(r"median \$([0-9.]+)", row.ours).group(1))
    assert "3 right" in row.note, row.note
    assert QUESTION_USD / 2 <= median <= QUESTION_USD * 2, f"measured ${median:.4f}, stated ${QUESTION_USD:.2f}: update costs.py"

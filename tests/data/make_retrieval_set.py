"""Generate tests/data/retrieval_set.jsonl: a labelled set for memory retrieval.

    python tests/data/make_retrieval_set.py            # rewrites retrieval_set.jsonl (deterministic)
    python tests/data/make_retrieval_set.py --check    # exit 1 if the file is not what this makes

Each line is either
    {"kind": "experience", "experience": {...an gitops_agent.memory.experience.Experience...}}
or
    {"kind": "query", "query": "...", "expected": "<task id>", "style": "full" | "partial"}

Experiences are past analysis tasks built from a data set x a measure x a breakdown x a period
(plus a filter for some), each with a plan outline, a summary and lessons, the way finish
writes them. Queries are paraphrases of some of those tasks' questions, as a user would ask the
same thing again in other words, never the experience's own question: another sentence, and
other surface forms of the concepts (synonyms, other word order, other function words). Each
concept has several surface forms; the experience's question uses one, its plan titles the
canonical one, and the query another one than the question's: for every concept (style
"full", half of the queries) or for two of them (style "partial").
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).with_name("retrieval_set.jsonl")
SEED = 20261126
N_EXPERIENCES = 240
N_QUERIES = 60

# concept -> surface forms (the first is the canonical one used in plan titles)
DATASETS = {
    "orders": ["orders", "customer orders", "purchase orders from the shop", "shop purchases"],
    "tickets": ["support tickets", "helpdesk tickets", "tickets opened with customer support", "support cases"],
    "invoices": ["invoices", "billed invoices", "invoice records", "bills sent to clients"],
    "shipments": ["shipments", "outbound shipments", "parcels shipped", "shipped packages"],
    "sessions": ["web sessions", "website visits", "browser sessions on the site", "site visits"],
    "payroll": ["payroll", "salary payments", "payroll records", "wages paid to staff"],
    "inventory": ["inventory levels", "stock on hand", "warehouse stock", "inventory counts"],
    "sensors": ["sensor readings", "temperature sensor measurements", "readings from the sensors", "IoT sensor data"],
    "flights": ["flights", "flight departures", "scheduled flights", "airline departures"],
    "claims": ["insurance claims", "filed claims", "claims submitted by policyholders", "claim filings"],
    "loans": ["loans", "loan applications", "credit applications", "loan requests"],
    "subscriptions": ["subscriptions", "subscription signups", "new subscribers", "subscriber accounts"],
    "returns": ["product returns", "returned items", "refund requests for returned goods", "merchandise returns"],
    "reviews": ["product reviews", "customer ratings", "star ratings left by buyers", "review scores"],
    "leads": ["sales leads", "marketing leads", "leads (prospects) in the CRM", "inbound leads"],
    "calls": ["call center calls", "phone calls to the hotline", "inbound calls", "hotline calls"],
    "incidents": ["production incidents", "outages", "incident reports", "service outages"],
    "deployments": ["deployments", "releases to production", "deploys", "production releases"],
    "builds": ["CI builds", "pipeline runs", "build jobs on CI", "CI pipeline executions"],
    "transactions": ["card transactions", "payment transactions", "credit card payments", "card payments"],
    "bookings": ["hotel bookings", "room reservations", "reservations at the hotels", "hotel stays booked"],
    "patients": ["patient admissions", "hospital admissions", "admitted patients", "inpatient admissions"],
    "energy": ["electricity consumption", "power usage from the meters", "energy meter readings", "kWh consumed"],
    "crashes": ["app crashes", "crash reports from the mobile app", "application crashes", "mobile crash logs"],
    "surveys": ["survey responses", "answers to the customer survey", "questionnaire responses", "survey answers"],
    "enrollments": ["course enrollments", "students enrolled in courses", "class registrations", "course signups"],
    "rides": ["taxi rides", "ride-hailing trips", "cab trips", "taxi trips"],
    "emails": ["marketing emails", "email campaigns sent", "newsletter sends", "campaign emails"],
    "repairs": ["repair orders", "maintenance work orders", "equipment repairs", "service repair jobs"],
    "donations": ["donations", "charitable gifts", "donor contributions", "gifts from donors"],
}

MEASURES = {
    "average": ["average value", "mean amount", "typical average size", "mean value"],
    "total": ["total amount", "sum of the amounts", "overall total", "aggregate total"],
    "count": ["number of records", "count of entries", "total number of entries", "record count"],
    "median": ["median duration", "middle value of the duration", "median time taken", "typical duration (median)"],
    "growth": ["growth rate", "percentage growth", "month-over-month growth", "rate of growth"],
    "share": ["share of the total", "percentage share", "proportion of the total", "fraction of the total"],
    "outliers": ["outliers", "anomalous values", "unusual outlier spikes", "abnormal outlier values"],
    "duplicates": ["duplicate rows", "duplicated entries", "repeated records", "duplicate records"],
    "correlation": ["correlation with price", "relationship to price", "how it correlates with price", "price correlation"],
    "cancel": ["cancellation rate", "percentage cancelled", "share that was cancelled", "rate of cancellations"],
    "peak": ["peak value", "highest maximum", "maximum peak reached", "top peak"],
    "missing": ["missing values", "gaps and empty fields", "blank or missing fields", "missing data"],
}

BREAKDOWNS = {
    "region": ["per region", "for each geographic region", "by sales region", "split by region"],
    "month": ["per month", "month by month", "for every calendar month", "by month"],
    "category": ["per product category", "by category of product", "for each category", "split by category"],
    "segment": ["per customer segment", "by segment of customers", "for each customer segment", "across customer segments"],
    "weekday": ["per weekday", "by day of the week", "for each day of the week", "across weekdays"],
    "channel": ["per sales channel", "by acquisition channel", "for each channel", "split by channel"],
    "country": ["per country", "by country", "for each country", "country by country"],
    "team": ["per team", "by owning team", "for each team", "team by team"],
    "tier": ["per pricing tier", "by plan tier", "for each pricing plan tier", "across plan tiers"],
    "hour": ["per hour of the day", "by hour of day", "for each hour of the day", "hourly"],
    "device": ["per device type", "by device (mobile or desktop)", "for each device type", "split by device"],
    "store": ["per store", "by store location", "for each store", "store by store"],
}

PERIODS = {
    "q3": ["in Q3 2025", "during the third quarter of 2025", "for Q3 of 2025"],
    "lastyear": ["over the last twelve months", "in the past 12 months", "for the last year"],
    "h1": ["in the first half of 2026", "during H1 2026", "for January to June 2026"],
    "march": ["in March 2026", "during March of 2026", "for the month of March 2026"],
    "yoy": ["compared year over year", "versus the previous year", "year on year"],
}

FILTERS = [None, None, None, "weekend", "refunded", "large", "new"]
FILTER_FORMS = {
    "weekend": ["on weekends only", "for Saturday and Sunday only", "weekend only"],
    "refunded": ["excluding refunded ones", "leaving out refunds", "without the refunded ones"],
    "large": ["above 1000 only", "for amounts over 1000", "only those larger than 1000"],
    "new": ["for new customers only", "only first-time customers", "restricted to new customers"],
}

QUESTION_TEMPLATES = [
    "What is the {m} of {d} {b} {p}{f}?",
    "Compute the {m} of {d} {b} {p}{f}.",
    "Show the {m} of the {d} {b}, {p}{f}.",
    "{D}: what was the {m} {b} {p}{f}?",
]
QUERY_TEMPLATES = [
    "{m} for {d}, {b}, {p}{f}",
    "Can you work out the {m} of our {d} {b} {p}{f}?",
    "I need the {m} of {d} broken down {b}, {p}{f}",
    "How did the {m} of {d} look {b} {p}{f}?",
    "{D} {b}: {m}, {p}{f}?",
    "Looking at {d} {p}{f}, what's the {m} {b}?",
]

LESSONS = [
    "Check the {c} file for non-numeric {x} values before summing; a plain float() fails on them.",
    "Parse dates with an explicit format; the {c} export mixes ISO dates and day/month/year.",
    "Group {x} {b} in one pass with a dict instead of filtering the file once per group.",
    "The {c} export has duplicate ids; drop them before computing the {m}.",
    "Loading the {c} data and computing the {m} could run in parallel after the data check.",
    "Save the per-group table as CSV in the step folder so the writer node can cite it.",
    "Timezones matter for {b}: convert timestamps to UTC first.",
]


def pick(rnd: random.Random, forms: list[str], avoid: set[int] = frozenset()) -> tuple[int, str]:
    choices = [i for i in range(len(forms)) if i not in avoid] or list(range(len(forms)))
    i = rnd.choice(choices)
    return i, forms[i]


def make(seed: int = SEED) -> list[dict]:
    rnd = random.Random(seed)
    combos = set()
    keys = []
    while len(keys) < N_EXPERIENCES:
        k = (
            rnd.choice(list(DATASETS)),
            rnd.choice(list(MEASURES)),
            rnd.choice(list(BREAKDOWNS)),
            rnd.choice(list(PERIODS)),
            rnd.choice(FILTERS),
        )
        if k[:3] in combos:
            continue
        combos.add(k[:3])
        keys.append(k)

    lines: list[dict] = []
    exps = []
    for n, (d, m, b, p, f) in enumerate(keys):
        di, dq = pick(rnd, DATASETS[d][1:])
        mi, mq = pick(rnd, MEASURES[m][1:])
        bi, bq = pick(rnd, BREAKDOWNS[b][1:])
        pi, pq = pick(rnd, PERIODS[p])
        fi, fq = pick(rnd, FILTER_FORMS[f]) if f else (-1, "")
        tmpl = rnd.choice(QUESTION_TEMPLATES)
        question = tmpl.format(m=mq, d=dq, D=dq[0].upper() + dq[1:], b=bq, p=pq, f=(", " + fq) if f else "")
        canon_d, canon_m, canon_b = DATASETS[d][0], MEASURES[m][0], BREAKDOWNS[b][0]
        task_id = f"{100 + n}-{d}-{m}-{b}"
        outcome = rnd.choices(["done", "failed", "budget"], weights=[8, 2, 1])[0]
        outline = [
            {"id": "n1", "title": f"Inspect the {canon_d} data", "status": "done", "agent": "analyst", "depth": 0},
            {
                "id": "n2",
                "title": f"{canon_m.capitalize()} {canon_b}",
                "status": "done" if outcome == "done" else "failed",
                "agent": "analyst",
                "depth": 0,
            },
        ]
        if rnd.random() < 0.4:
            outline.append(
                {
                    "id": "n3",
                    "title": "Write the summary table",
                    "status": "done" if outcome == "done" else "skipped",
                    "agent": "writer",
                    "depth": 0,
                }
            )
        lessons = [rnd.choice(LESSONS).format(c=d, x=canon_d, b=canon_b, m=canon_m) for _ in range(rnd.randint(1, 2))]
        summary = f"{canon_m.capitalize()} of {canon_d} {canon_b}, {PERIODS[p][0]}" if outcome == "done" else ""
        failures = [] if outcome == "done" else [f"n2 ({canon_m} {canon_b}) failed: the amount column has non-numeric values"]
        exp = {
            "schema": 1,
            "task_id": task_id,
            "branch": f"agent/task/{task_id}",
            "question": question,
            "instructions": [],
            "outline": outline,
            "outcome": outcome,
            "summary": summary,
            "answer": f"## {summary or 'No answer'}\n\n(table of {canon_m} {canon_b})\n" if outcome == "done" else "",
            "lessons": lessons,
            "failures": failures,
            "cost_usd": round(rnd.uniform(0.002, 0.2), 4),
            "tokens": rnd.randint(5000, 90000),
            "date": f"2026-{rnd.randint(1, 10):02d}-{rnd.randint(1, 28):02d}T12:00:00Z",
            "reused": [],
            "parent": None,
        }
        exps.append((exp, (d, m, b, p, f), (di, mi, bi, pi, fi)))
        lines.append({"kind": "experience", "experience": exp})

    for qn, (exp, (d, m, b, p, f), (di, mi, bi, pi, fi)) in enumerate(rnd.sample(exps, N_QUERIES)):
        # "full": another surface form than the question's for every concept (data set, measure,
        # breakdown, period, filter); "partial": two of data set/measure/breakdown/period reworded,
        # the rest as the user said it before. Always another sentence (query templates differ).
        style = "full" if qn % 2 == 0 else "partial"
        reword = {"d", "m", "b", "p", "f"} if style == "full" else set(rnd.sample(["d", "m", "b", "p"], 2))

        def form(key, forms, used):
            return pick(rnd, forms, {used})[1] if key in reword else forms[used]

        dq = form("d", DATASETS[d][1:], di)
        mq = form("m", MEASURES[m][1:], mi)
        bq = form("b", BREAKDOWNS[b][1:], bi)
        pq = form("p", PERIODS[p], pi)
        fq = form("f", FILTER_FORMS[f], fi) if f else ""
        tmpl = rnd.choice(QUERY_TEMPLATES)
        query = tmpl.format(m=mq, d=dq, D=dq[0].upper() + dq[1:], b=bq, p=pq, f=(", " + fq) if f else "")
        assert query.lower() != exp["question"].lower()
        lines.append({"kind": "query", "query": query, "expected": exp["task_id"], "style": style})
    return lines


def render(lines: list[dict]) -> str:
    return "".join(json.dumps(x, ensure_ascii=False, sort_keys=True) + "\n" for x in lines)


def main(argv: list[str]) -> int:
    text = render(make())
    if "--check" in argv:
        ok = OUT.exists() and OUT.read_text() == text
        print("up to date" if ok else f"{OUT} differs from what this script makes")
        return 0 if ok else 1
    OUT.write_text(text)
    n_e = sum(1 for x in make() if x["kind"] == "experience")
    print(f"wrote {OUT}: {n_e} experiences, {text.count(chr(10)) - n_e} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

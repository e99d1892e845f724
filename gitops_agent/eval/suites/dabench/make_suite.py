#!/usr/bin/env python
"""Writes the `dabench` eval suite (and `dabench-pg`, the same over PostgreSQL: pg.py): small CSVs (seeded, so the
same every time), the questions, and their expected answers, computed here from the generated rows in plain Python --
never typed in -- and the scripted model's solution for each (Python that reads the CSV files as a person would, with
pandas, or duckdb for joins and group-bys, run for real in the sandbox's workbench, so CI checks the whole chain). In
the style of InfiAgent-DABench: closed-form questions over data (filtering, grouping, joins, dates, missing values).

    python gitops_agent/eval/suites/dabench/make_suite.py          # rewrite data/ and suite.yaml here
    python gitops_agent/eval/suites/dabench/make_suite.py --check  # exit 1 if they are not what it writes
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import re
import statistics
import sys
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FORMAT = "End your answer with one line `Answer: <value>`"


def make_data(seed: int = 7) -> dict[str, list[dict]]:
    rnd = random.Random(seed)
    products = [
        {"product": f"P{i}", "category": cat, "list_price": price, "cost": round(price * rnd.uniform(0.45, 0.7), 2)}
        for i, (cat, price) in enumerate(
            [
                ("tools", 24.5),
                ("tools", 89.0),
                ("garden", 12.75),
                ("garden", 45.0),
                ("kitchen", 8.9),
                ("kitchen", 31.2),
                ("tools", 150.0),
                ("garden", 5.5),
            ],
            1,
        )
    ]
    customers = [
        {
            "customer_id": f"C{i:02d}",
            "name": f"Customer {i}",
            "segment": rnd.choice(["retail", "retail", "business"]),
            "signup_date": (date(2023, 6, 1) + timedelta(days=rnd.randrange(0, 540))).isoformat(),
            "country": rnd.choice(["DE", "FR", "NL", "DE", "ES"]),
        }
        for i in range(1, 21)
    ]
    orders = []
    for i in range(1, 201):
        p = rnd.choice(products)
        disc = rnd.choice(["0", "0.05", "0.1", "0.15", ""])
        orders.append(
            {
                "order_id": i,
                "customer_id": f"C{rnd.randrange(1, 19):02d}",  # C19, C20 never order
                "date": (date(2025, 1, 1) + timedelta(days=rnd.randrange(0, 365))).isoformat(),
                "region": rnd.choice(["north", "south", "east", "west"]),
                "product": p["product"],
                "qty": rnd.randrange(1, 10),
                "unit_price": p["list_price"],
                "discount": disc,
            }
        )
    weather = []
    for day in range(60):
        for city in ("A", "B"):
            t = 18 + (6 if city == "A" else 2) + 0.12 * day + rnd.gauss(0, 2.5)
            sales = round(40 + 9.5 * t + rnd.gauss(0, 25) + (0.8 * day if city == "A" else 0))
            weather.append(
                {
                    "date": (date(2025, 6, 1) + timedelta(days=day)).isoformat(),
                    "city": city,
                    "temp_c": "" if rnd.random() < 0.08 else f"{t:.1f}",
                    "ice_cream_sales": sales,
                }
            )
    return {"orders": orders, "customers": customers, "products": products, "weather": weather}


def rev(o: dict) -> float:
    return o["qty"] * o["unit_price"]


def expected(d: dict[str, list[dict]]) -> dict[str, object]:
    """The answers, from the rows in memory (the solutions below read the CSV files instead)."""
    o, c, p, w = d["orders"], d["customers"], d["products"], d["weather"]
    cust = {x["customer_id"]: x for x in c}
    prod = {x["product"]: x for x in p}
    by_region: dict[str, float] = defaultdict(float)
    by_month: dict[str, float] = defaultdict(float)
    by_country: dict[str, float] = defaultdict(float)
    units_cat: dict[str, int] = defaultdict(int)
    by_product: dict[str, float] = defaultdict(float)
    for x in o:
        by_region[x["region"]] += rev(x)
        by_month[x["date"][:7]] += rev(x)
        by_country[cust[x["customer_id"]]["country"]] += rev(x)
        units_cat[prod[x["product"]]["category"]] += x["qty"]
        by_product[x["product"]] += rev(x)
    counts = Counter(x["customer_id"] for x in o)
    top_count = max(counts.values())
    temps = [(float(x["temp_c"]), x["ice_cream_sales"]) for x in w if x["temp_c"]]
    a = [x for x in w if x["city"] == "A"]
    xs, ys = list(range(len(a))), [x["ice_cream_sales"] for x in a]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((i - mx) * (y - my) for i, y in zip(xs, ys)) / sum((i - mx) ** 2 for i in xs)
    first = {}
    for x in sorted(o, key=lambda x: x["date"]):
        first.setdefault(x["customer_id"], x["date"])
    gaps = [(date.fromisoformat(first[k]) - date.fromisoformat(cust[k]["signup_date"])).days for k in first]
    sales_city = {k: statistics.fmean(x["ice_cream_sales"] for x in w if x["city"] == k) for k in ("A", "B")}
    hot_a = max((x for x in a if x["temp_c"]), key=lambda x: float(x["temp_c"]))
    return {
        "q01": len(o),
        "q02": round(sum(map(rev, o)), 2),
        "q03": round(statistics.fmean(x["qty"] for x in o), 2),
        "q04": sum(1 for x in o if x["discount"] == ""),
        "q05": round(statistics.fmean(float(x["discount"]) for x in o if x["discount"] != ""), 4),
        "q06": max(by_region, key=by_region.get),
        "q07": round(by_region["north"], 2),
        "q08": len(counts),
        "q09": min(k for k, v in counts.items() if v == top_count),
        "q10": sum(1 for x in o if x["date"].startswith("2025-03")),
        "q11": max(by_month, key=by_month.get),
        "q12": round(sum(rev(x) for x in o if cust[x["customer_id"]]["segment"] == "business"), 2),
        "q13": max(by_country, key=by_country.get),
        "q14": round(sum(x["qty"] * (x["unit_price"] - prod[x["product"]]["cost"]) for x in o), 2),
        "q15": max(units_cat, key=units_cat.get),
        "q16": round(sum(rev(x) * (1 - float(x["discount"] or 0)) for x in o), 2),
        "q17": round(statistics.median(map(rev, o)), 2),
        "q18": round(statistics.stdev(x["qty"] for x in o), 4),
        "q19": sum(1 for x in o if rev(x) > 200),
        "q20": round(statistics.correlation([t for t, _ in temps], [s for _, s in temps]), 4),
        "q21": round(slope, 4),
        "q22": sum(1 for x in w if not x["temp_c"]),
        "q23": round(statistics.fmean(float(x["temp_c"]) for x in w if x["city"] == "B" and x["temp_c"]), 2),
        "q24": max(sales_city, key=sales_city.get),
        "q25": hot_a["date"],
        "q26": sum(1 for x in c if x["signup_date"].startswith("2024")),
        "q27": round(statistics.fmean(gaps), 2),
        "q28": ", ".join(sorted(by_product, key=lambda k: -by_product[k])[:3]),
        "q29": len(c) - len(counts),
    }


# (id, question, check kind, the scripted model's solution: Python run in the task's working tree)
QUESTIONS: list[tuple[str, str, str, str]] = [
    (
        "q01",
        "How many orders are there in data/orders.csv?",
        "number",
        "with open('data/orders.csv') as f:\n    print(sum(1 for _ in f) - 1)  # lines, less the header",
    ),
    (
        "q02",
        "What is the total revenue (qty times unit_price, summed over all orders) in data/orders.csv, to 2 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nprint(round((df.qty * df.unit_price).sum(), 2))",
    ),
    (
        "q03",
        "What is the average quantity (qty) per order in data/orders.csv, to 2 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nprint(round(df.qty.mean(), 2))",
    ),
    (
        "q04",
        "How many orders in data/orders.csv have no discount value (the field is empty)?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nprint(df.discount.isna().sum())",
    ),
    (
        "q05",
        "What is the mean discount of the orders in data/orders.csv that have one (ignore empty values), to 4 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nprint(round(df.discount.mean(), 4))  # NaN is skipped",
    ),
    (
        "q06",
        "Which region has the highest total revenue (qty times unit_price) in data/orders.csv?",
        "text",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\n"
        "print((df.qty * df.unit_price).groupby(df.region).sum().idxmax())",
    ),
    (
        "q07",
        "What is the total revenue (qty times unit_price) of the north region in data/orders.csv, to 2 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nnorth = df[df.region == 'north']\n"
        "print(round((north.qty * north.unit_price).sum(), 2))",
    ),
    (
        "q08",
        "How many distinct customers placed at least one order in data/orders.csv?",
        "number",
        "import pandas as pd\nprint(pd.read_csv('data/orders.csv').customer_id.nunique())",
    ),
    (
        "q09",
        "Which customer_id placed the most orders in data/orders.csv? On a tie, give the smallest id.",
        "text",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\n"
        "print(df.groupby('customer_id').size().idxmax())  # groups are sorted: the first maximum is the smallest id",
    ),
    (
        "q10",
        "How many orders in data/orders.csv were placed in March 2025?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nprint(df.date.str.startswith('2025-03').sum())",
    ),
    (
        "q11",
        "Which month (as YYYY-MM) had the highest total revenue (qty times unit_price) in data/orders.csv?",
        "text",
        'import duckdb\nprint(duckdb.sql("""\n'
        "    select strftime(date, '%Y-%m') as month from 'data/orders.csv'\n"
        "    group by month order by sum(qty * unit_price) desc limit 1\n"
        '""").fetchall()[0][0])',
    ),
    (
        "q12",
        "What is the total revenue (qty times unit_price) of orders by customers in the business segment "
        "(data/customers.csv), to 2 decimals?",
        "number",
        'import duckdb\nprint(duckdb.sql("""\n'
        "    select round(sum(qty * unit_price), 2)\n"
        "    from 'data/orders.csv' join 'data/customers.csv' using (customer_id)\n"
        "    where segment = 'business'\n"
        '""").fetchall()[0][0])',
    ),
    (
        "q13",
        "Customers of which country (data/customers.csv) bring the most revenue (qty times unit_price, data/orders.csv)? "
        "Give the country code.",
        "text",
        'import duckdb\nprint(duckdb.sql("""\n'
        "    select country from 'data/orders.csv' join 'data/customers.csv' using (customer_id)\n"
        "    group by country order by sum(qty * unit_price) desc limit 1\n"
        '""").fetchall()[0][0])',
    ),
    (
        "q14",
        "What is the total profit, qty times (unit_price minus the product's cost in data/products.csv), over all orders, "
        "to 2 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv').merge(pd.read_csv('data/products.csv'), on='product')\n"
        "print(round((df.qty * (df.unit_price - df.cost)).sum(), 2))",
    ),
    (
        "q15",
        "Which product category (data/products.csv) sold the most units (qty) in data/orders.csv?",
        "text",
        'import duckdb\nprint(duckdb.sql("""\n'
        "    select category from 'data/orders.csv' join 'data/products.csv' using (product)\n"
        "    group by category order by sum(qty) desc limit 1\n"
        '""").fetchall()[0][0])',
    ),
    (
        "q16",
        "What is the total revenue after discounts, qty times unit_price times (1 minus discount), counting an empty "
        "discount as 0, to 2 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\n"
        "print(round((df.qty * df.unit_price * (1 - df.discount.fillna(0))).sum(), 2))",
    ),
    (
        "q17",
        "What is the median order revenue (qty times unit_price) in data/orders.csv, to 2 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nprint(round((df.qty * df.unit_price).median(), 2))",
    ),
    (
        "q18",
        "What is the sample standard deviation of qty in data/orders.csv, to 4 decimals?",
        "number",
        "import pandas as pd\nprint(round(pd.read_csv('data/orders.csv').qty.std(), 4))  # ddof=1: the sample's",
    ),
    (
        "q19",
        "How many orders in data/orders.csv have a revenue (qty times unit_price) above 200?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\nprint((df.qty * df.unit_price > 200).sum())",
    ),
    (
        "q20",
        "What is the Pearson correlation between temp_c and ice_cream_sales in data/weather.csv, over the rows that have "
        "a temperature, to 4 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/weather.csv')\n"
        "print(round(df.temp_c.corr(df.ice_cream_sales), 4))  # rows with a missing temp_c are left out",
    ),
    (
        "q21",
        "What is the least-squares slope of ice_cream_sales per day for city A in data/weather.csv (x = 0, 1, 2, … for "
        "city A's rows in date order), to 4 decimals?",
        "number",
        "import numpy as np\nimport pandas as pd\ndf = pd.read_csv('data/weather.csv')\n"
        "a = df[df.city == 'A'].sort_values('date')\n"
        "print(round(np.polyfit(np.arange(len(a)), a.ice_cream_sales, 1)[0], 4))",
    ),
    (
        "q22",
        "How many rows of data/weather.csv have no temperature (temp_c is empty)?",
        "number",
        "import pandas as pd\nprint(pd.read_csv('data/weather.csv').temp_c.isna().sum())",
    ),
    (
        "q23",
        "What is the mean temperature of city B in data/weather.csv, ignoring missing values, to 2 decimals?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/weather.csv')\nprint(round(df[df.city == 'B'].temp_c.mean(), 2))",
    ),
    (
        "q24",
        "Which city in data/weather.csv has the higher average ice_cream_sales?",
        "text",
        "import pandas as pd\nprint(pd.read_csv('data/weather.csv').groupby('city').ice_cream_sales.mean().idxmax())",
    ),
    (
        "q25",
        "On which date (YYYY-MM-DD) was city A hottest in data/weather.csv?",
        "text",
        "import pandas as pd\ndf = pd.read_csv('data/weather.csv')\na = df[df.city == 'A']\n"
        "print(a.loc[a.temp_c.idxmax(), 'date'])",
    ),
    (
        "q26",
        "How many customers in data/customers.csv signed up in 2024?",
        "number",
        "import pandas as pd\ndf = pd.read_csv('data/customers.csv', parse_dates=['signup_date'])\n"
        "print((df.signup_date.dt.year == 2024).sum())",
    ),
    (
        "q27",
        "For the customers who ordered, what is the average number of days from signup (data/customers.csv) to their "
        "first order (data/orders.csv), to 2 decimals?",
        "number",
        'import duckdb\nprint(duckdb.sql("""\n'
        "    with firsts as (select customer_id, min(date) as first_order from 'data/orders.csv' group by customer_id)\n"
        "    select round(avg(date_diff('day', signup_date, first_order)), 2)\n"
        "    from firsts join 'data/customers.csv' using (customer_id)\n"
        '""").fetchall()[0][0])',
    ),
    (
        "q28",
        "Which are the top 3 products by revenue (qty times unit_price) in data/orders.csv? Give them as a comma-separated "
        "list, highest first.",
        "list",
        "import pandas as pd\ndf = pd.read_csv('data/orders.csv')\n"
        "top = (df.qty * df.unit_price).groupby(df['product']).sum().nlargest(3)\nprint(', '.join(top.index))",
    ),
    (
        "q29",
        "How many customers in data/customers.csv never placed an order?",
        "number",
        'import duckdb\nprint(duckdb.sql("""\n'
        "    select count(*) from 'data/customers.csv'\n"
        "    where customer_id not in (select customer_id from 'data/orders.csv')\n"
        '""").fetchall()[0][0])',
    ),
]


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def build() -> dict[str, str]:
    """Every file of the suite (relative path -> text)."""
    data = make_data()
    want = expected(data)
    questions = []
    for qid, text, kind, solution in QUESTIONS:
        value = want[qid]
        check: dict[str, object] = {"type": kind, "value": value}
        if kind == "number":  # one unit of the last decimal the question asks for
            asked = re.search(r"to (\d) decimals", text)
            check["tolerance"] = 10 ** -int(asked.group(1)) if asked else 0
        questions.append({"id": qid, "question": f"{text} {FORMAT}.", "check": check, "solution": solution})
    suite = {
        "name": "dabench",
        "description": "closed-form data questions over small CSVs (issue 15); regenerate with make_suite.py",
        "data": "data",
        "questions": questions,
    }
    files = {f"data/{name}.csv": csv_text(rows) for name, rows in data.items()}
    files["suite.yaml"] = "# written by make_suite.py: do not edit by hand\n" + yaml.safe_dump(
        suite, sort_keys=False, allow_unicode=True, width=120
    )
    assert not any(isinstance(v, float) and math.isnan(v) for v in want.values())
    sys.path.insert(0, str(HERE))
    files.update(__import__("pg").pg_suite(suite, files, sorted(data)))  # dabench-pg: the same over PostgreSQL
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk; write nothing")
    a = ap.parse_args()
    files = build()
    stale = [p for p, text in files.items() if not (HERE / p).is_file() or (HERE / p).read_text() != text]
    if a.check:
        for p in stale:
            print(f"make_suite: {p} is not what make_suite.py writes", file=sys.stderr)
        return 1 if stale else 0
    for p, text in files.items():
        (HERE / p).parent.mkdir(parents=True, exist_ok=True)
        (HERE / p).write_text(text)
    print(f"wrote {len(files)} files ({len(QUESTIONS)} questions) under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

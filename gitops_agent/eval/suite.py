"""An eval suite: questions over data, each with a checker, read from a YAML file (see
gitops_agent/eval/suites/dabench/suite.yaml, written by its make_suite.py).

    name: my-suite
    data: data                    # a folder next to the file: committed into each question's task repository
    questions:
      - id: q01
        question: "How many orders are there? End your answer with one line `Answer: <value>`."
        check: {type: number, value: 200, tolerance: 0}       # |answer - value| <= tolerance
      - check: {type: text, value: north}                     # equal, ignoring case and surrounding space/quotes
      - check: {type: list, value: "P7, P2, P4"}              # the same items in the same order
      - check: {type: regex, pattern: "\\bnorth\\b"}          # searched in the whole answer
      - check: {type: facts, all: [north, "42"]}              # every one appears (case-insensitive)
      - check: {type: judge, rubric: "Names the top region and its revenue."}   # a judge model (gitops_agent/eval/judge.py)
        solution: "print(200)"   # optional: the scripted model's code (`--model scripted`)
    database: {source: shop, url_env: DABENCH_EVAL_URL}   # optional: the data in PostgreSQL (eval/database.py)

The value checkers read the answer's last `Answer:` line (the questions ask for it); an answer
without one fails, saying so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.state import format_validation_error

SUITES = Path(__file__).resolve().parent / "suites"
_ANSWER = re.compile(r"(?im)^[ \t>*_`#-]*answer[ \t]*[:=][ \t]*(\S.*?)[ \t]*$")
# a number: thousands grouped by commas only in threes ("1,234.5"; "2,5" is two numbers)
_NUM = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE]-?\d+)?(?![\w.])|(?<![\w.])-?\.\d+(?![\w.])|\d+")


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NumberCheck(_Check):
    type: Literal["number"]
    value: float
    tolerance: float = Field(0.0, ge=0)


class TextCheck(_Check):
    type: Literal["text"]
    value: str


class ListCheck(_Check):
    type: Literal["list"]
    value: str


class RegexCheck(_Check):
    type: Literal["regex"]
    pattern: str


class FactsCheck(_Check):
    type: Literal["facts"]
    all: list[str] = Field(min_length=1)


class JudgeCheck(_Check):
    type: Literal["judge"]
    rubric: str = Field(min_length=1)
    model: str | None = None


Check = Annotated[Union[NumberCheck, TextCheck, ListCheck, RegexCheck, FactsCheck, JudgeCheck], Field(discriminator="type")]


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
    question: str = Field(min_length=1, max_length=20_000)
    check: Check
    solution: str | None = None


class SuiteDatabase(BaseModel):
    """``database:`` of a suite: its data is loaded into a database (its CSV files become tables of
    the same names, replaced; a column ``_row`` keeps the files' order) and each question's repository
    declares it as the data source ``source`` instead of holding the files."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field("shop", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    # the loader replaces tables: only a variable named for it may point it at a database, never
    # the URL of a source the agent queries (SHOP_DB_URL)
    url_env: str = Field("DABENCH_EVAL_URL", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,50}_EVAL_URL$")


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
    description: str = ""
    data: str | None = None
    database: SuiteDatabase | None = None
    questions: list[Question] = Field(min_length=1)
    path: Path | None = Field(None, exclude=True)

    @property
    def data_dir(self) -> Path | None:
        if self.data is None or self.path is None:
            return None
        d = (self.path.parent / self.data).resolve()
        if not d.is_relative_to(self.path.parent.resolve()):
            raise ConfigError(f"{self.path}: data {self.data!r} is outside the suite's folder")
        return d


def load_suite(spec: str | Path, inside: Path | None = None) -> Suite:
    """A suite file, or the name of a shipped suite (``dabench``). ``inside``: settings named it,
    so it must be a shipped suite or a regular file in that repository (no link out of it)."""
    path = Path(spec)
    shipped_one = isinstance(spec, str) and "/" not in spec and (SUITES / spec / "suite.yaml").is_file()
    if shipped_one and (inside is not None or not path.exists()):
        path = SUITES / str(spec) / "suite.yaml"
    elif inside is not None and not path.is_absolute():
        path = inside / path
    if path.is_dir():
        path = path / "suite.yaml"
    if inside is not None and not shipped_one:
        real = path.resolve()
        if path.is_symlink() or not real.is_relative_to(inside.resolve()):
            raise ConfigError(f"eval suite {str(spec)!r}: not a shipped suite nor a file inside the repository")
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in SUITES.iterdir() if (p / "suite.yaml").is_file()))
        raise ConfigError(f"no eval suite {str(spec)!r}: give a suite file, or one of the shipped suites: {shipped}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e)}") from None
    ids = [q.id for q in suite.questions]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{path}: question ids used twice: {', '.join(dup)}")
    suite.path = path
    if suite.data is not None and not (suite.data_dir and suite.data_dir.is_dir()):
        raise ConfigError(f"{path}: its data folder {suite.data!r} does not exist")
    return suite


def final_value(answer: str) -> str | None:
    """The value of the answer's last `Answer:` line, without Markdown emphasis or quotes."""
    found = _ANSWER.findall(answer or "")
    if not found:
        return None
    return found[-1].strip().strip("*_`\"'").strip()


def _number(text: str) -> float | None | str:
    """The one number of an `Answer:` value (what is in parentheses aside); a message when it
    holds none or several ("3, 4 and 5", "12 or 13", a date)."""
    plain = re.sub(r"\([^)]*\)", " ", text.replace("\u2212", "-"))
    found = _NUM.findall(plain)
    if len(found) != 1:
        return None if not found else f"holds {len(found)} numbers, not one"
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


def check_answer(check: Check, answer: str) -> tuple[bool, str]:
    """(passed, why) for the value checkers; judge checks are gitops_agent/eval/judge.py's."""
    if isinstance(check, (RegexCheck, FactsCheck)):
        if isinstance(check, RegexCheck):
            try:
                ok = re.search(check.pattern, answer or "") is not None
            except re.error as e:
                return False, f"the check's pattern is not a regex: {e}"
            return ok, "the pattern matches" if ok else f"no match for /{check.pattern}/"
        missing = [f for f in check.all if f.lower() not in (answer or "").lower()]
        return not missing, "every fact is there" if not missing else f"missing: {', '.join(missing)}"
    value = final_value(answer)
    if value is None:
        return False, "no `Answer:` line in the answer"
    if isinstance(check, NumberCheck):
        got = _number(value)
        if got is None or isinstance(got, str):
            return False, f"`Answer: {value[:80]}` {got or 'holds no number'}"
        ok = abs(got - check.value) <= check.tolerance + 1e-9 * max(1.0, abs(check.value))
        return ok, f"{got:g} {'is' if ok else 'is not'} {check.value:g} ± {check.tolerance:g}"
    if isinstance(check, TextCheck):
        ok = value.strip().lower() == check.value.strip().lower()
        return ok, f"{value[:80]!r} {'equals' if ok else 'is not'} {check.value!r}"
    if isinstance(check, ListCheck):
        norm = lambda s: [x.strip().strip("*_`\"'").lower() for x in re.split(r"[,;]", s) if x.strip()]  # noqa: E731
        ok = norm(value) == norm(check.value)
        return ok, f"{value[:80]!r} {'is' if ok else 'is not'} the list {check.value!r}"
    raise ConfigError(f"check {check.type!r} needs a judge model")

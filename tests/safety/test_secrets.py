"""Redaction of secrets in their plain form and in the encodings code uses to smuggle them."""

from __future__ import annotations

import base64
import urllib.parse

import pytest

from gitops_agent.safety.secrets import REDACTED, redact, redact_for_commit

SECRET = "sk-ant-api03-Zq8xW2vB7nM4kL9pR3tY6uI1oP5aS0dF"


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        SECRET[::-1],
        SECRET.encode().hex(),
        SECRET.encode().hex().upper(),
        urllib.parse.quote(SECRET, safe=""),
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(b"x" + SECRET.encode()).decode(),  # the three alignments inside a longer text
        base64.b64encode(b"xy" + SECRET.encode()).decode(),
        base64.urlsafe_b64encode(b"?" + SECRET.encode()).decode(),
        " ".join(SECRET),
        "-".join(SECRET),
        "\n".join(SECRET[i : i + 8] for i in range(0, len(SECRET), 8)),
        " ".join(SECRET.encode().hex()[i : i + 2] for i in range(0, 2 * len(SECRET), 2)),
        base64.b64encode(SECRET[::-1].encode()).decode(),  # reversed, then base64 (the alignments too)
        base64.b64encode(b"x" + SECRET[::-1].encode()).decode(),
        base64.urlsafe_b64encode(b"xy" + SECRET[::-1].encode()).decode(),
    ],
    ids=[
        "plain",
        "reversed",
        "hex",
        "HEX",
        "url",
        "b64",
        "b64+1",
        "b64+2",
        "urlsafe",
        "spaced",
        "dashed",
        "wrapped",
        "hex-spaced",
        "reversed+b64",
        "reversed+b64+1",
        "reversed+urlsafe+2",
    ],
)
def test_every_encoding_of_a_known_secret_is_masked(form):
    text = f"here it is: {form} -- done"
    out = redact(text, [SECRET])
    assert REDACTED in out and out.startswith("here it is: ") and out.endswith(" -- done")
    leftover = out.replace(REDACTED, "")
    for probe in (SECRET, SECRET[::-1], SECRET[8:24]):
        assert probe not in leftover


def test_text_without_the_secret_is_unchanged_and_big_texts_stay_fast():
    text = "the average order value is 71.40 in East; " * 1000
    assert redact(text, [SECRET]) == text
    big = "x" * (3 << 20) + SECRET
    assert redact(big, [SECRET]).endswith(REDACTED)


def test_commits_keep_json_valid_while_masking():
    import json

    data = json.dumps({"k": base64.b64encode(SECRET.encode()).decode(), "n": 1}).encode()
    import os

    os.environ["TEST_API_KEY_FOR_REDACTION"] = SECRET
    try:
        out = json.loads(redact_for_commit("a.json", data))
    finally:
        del os.environ["TEST_API_KEY_FOR_REDACTION"]
    assert out == {"k": REDACTED, "n": 1}

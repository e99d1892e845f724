"""A scripted task whose code draws charts: real PNG files written with zlib and struct (the code
may run where matplotlib cannot be imported), plus files that must not be shown as charts."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

# The model's code: a small bar chart; optionally six more small charts (over the count cap), a
# page of HTML named like a PNG, and a real PNG over the size cap (random pixels do not compress).
PNG_CODE = r"""
import glob, os, struct, zlib
out = glob.glob(".agent/tasks/*/steps/*-n1")[0]

def png(name, w, h, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))

bars = [3, 7, 5]
rows = b"".join(
    b"\0" + b"".join(b"\x33\x66\xcc" if 40 - y <= bars[min(x // 20, 2)] * 5 else b"\xff\xff\xff" for x in range(60))
    for y in range(40)
)
png("chart.png", 60, 40, rows)
if EXTRAS:
    for i in range(1, 7):
        png(f"extra{i}.png", 4, 4, (b"\0" + bytes([40 * i, 0, 0]) * 4) * 4)
    with open(os.path.join(out, "a_fake.png"), "w") as f:
        f.write("<html><body><script>alert(1)</script></body></html>")
    png("b_huge.png", 640, 600, b"".join(b"\0" + os.urandom(640 * 3) for _ in range(600)))
print("| product | revenue |")
print("|---|---:|")
print("| widget | 35.00 |")
print(f"charts written to {out}")
"""

SCRIPT = """
planner:
  - tool: update_plan
    input:
      note: one node draws the chart
      nodes:
        - id: n1
          title: Chart of revenue per product
          goal: Draw revenue per product as a PNG in your step folder.
  - when: "'n1' in results"
    tool: finish
    input:
      summary: Revenue per product, as a chart
      answer: "Widgets lead the revenue (chart below)."
executor:n1:
  - tool: run_python
    input:
      code: |
{code}
  - tool: finish_step
    input:
      status: done
      result: "{{{{ last_output }}}}"
"""


def write_script(path: Path, extras: bool) -> Path:
    """The scripted model's answers, with or without the extra files."""
    code = ("EXTRAS = True\n" if extras else "EXTRAS = False\n") + PNG_CODE
    path.write_text(SCRIPT.format(code="\n".join("        " + line for line in code.splitlines())))
    return path


def tiny_png(width: int = 2, height: int = 2) -> bytes:
    """A valid PNG (for the tests' own checks)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" + b"\x10\x20\x30" * width) * height
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")

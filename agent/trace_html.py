"""The trace as one self-contained HTML page: no network request of any kind (inline CSS and
JS, no fonts, no CDN; a Content-Security-Policy that forbids loads), the plan drawn as inline
SVG by a small layered DAG layout, the timeline, every step's code, observations and result in
folded ``<details>``, and the cost per model and per role.

Everything from the branch is model output and is HTML-escaped by the template's autoescape;
the only markup passed through unescaped is this module's own script.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

from . import __version__
from .brain import default_prompts_dir
from .render import fmt_tokens
from .trace import Trace, TraceNode, TraceStep

__all__ = ["render_html", "write_html", "layout_plan", "PlanGraph"]

TEMPLATE = "trace.html.j2"

# Node box and gaps of the plan graph, in SVG units (px at 100%).
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 200, 64, 28, 54, 16

# The page's only script: expand / collapse all, and open the step a link points at.
_SCRIPT = """
(function () {
  function all(open) {
    document.querySelectorAll('details.step, details.turn').forEach(function (d) { d.open = open; });
  }
  function reveal() {
    var id = decodeURIComponent((location.hash || '').slice(1));
    if (!id) return;
    var el = document.getElementById(id);
    if (el && el.tagName === 'DETAILS') { el.open = true; el.scrollIntoView({block: 'start'}); }
  }
  document.addEventListener('click', function (e) {
    var b = e.target.closest('[data-expand]');
    if (b) { all(b.getAttribute('data-expand') === 'open'); }
  });
  window.addEventListener('hashchange', reveal);
  document.addEventListener('DOMContentLoaded', reveal);
})();
""".strip()


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


# ----------------------------------------------------------------------------- plan layout


@dataclass
class GraphNode:
    id: str
    title: str
    goal: str
    status: str
    mark: str
    agent: str
    is_leaf: bool
    steps: list[int]
    cost_usd: float
    duration_ms: int
    layer: int = 0
    x: float = 0.0
    y: float = 0.0

    @property
    def href(self) -> str:
        return f"#step-{self.steps[-1]}" if self.steps else f"#node-{self.id}"

    @property
    def short_title(self) -> str:
        t = " ".join(self.title.split())
        return t if len(t) <= 30 else t[:29].rstrip() + "…"

    @property
    def info(self) -> str:
        parts = []
        if self.steps:
            parts.append(("step " if len(self.steps) == 1 else "steps ") + ", ".join(map(str, self.steps)))
            parts.append(f"{self.duration_ms / 1000:.1f} s")
            parts.append(f"${self.cost_usd:.4f}")
        elif not self.is_leaf:
            parts.append("group")
        else:
            parts.append(self.agent)
        return " · ".join(parts)


@dataclass
class GraphEdge:
    src: str
    dst: str
    kind: str  # "dep" (depends_on: src must finish first) or "tree" (parent → child)
    d: str = ""


@dataclass
class PlanGraph:
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    node_w: int = NODE_W
    node_h: int = NODE_H


def layout_plan(trace: Trace) -> PlanGraph:
    """A layered layout of the plan: a node sits below everything it depends on and below its
    parent (longest path layering), nodes in a layer are ordered by the mean position of their
    neighbours (a few barycentre sweeps), and edges are vertical cubic curves."""
    g = PlanGraph()
    if trace.plan is None:
        return g
    order: list[TraceNode] = list(trace.plan.walk())
    by_id = {n.id: n for n in order}
    nodes = {
        n.id: GraphNode(n.id, n.title, n.goal, n.status.value, n.mark, n.agent, not n.children, list(n.steps), n.cost_usd, n.duration_ms)
        for n in order
    }
    edges: list[GraphEdge] = []
    for n in order:
        for c in n.children:
            edges.append(GraphEdge(n.id, c.id, "tree"))
        for d in n.depends_on:
            if d in by_id:
                edges.append(GraphEdge(d, n.id, "dep"))
    preds: dict[str, list[str]] = {i: [] for i in nodes}
    succs: dict[str, list[str]] = {i: [] for i in nodes}
    for e in edges:
        preds[e.dst].append(e.src)
        succs[e.src].append(e.dst)

    # longest-path layering (Kahn); anything left in a cycle goes below the rest
    indeg = {i: len(p) for i, p in preds.items()}
    queue = [i for i in nodes if indeg[i] == 0]
    seen: list[str] = []
    while queue:
        u = queue.pop(0)
        seen.append(u)
        for v in succs[u]:
            nodes[v].layer = max(nodes[v].layer, nodes[u].layer + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                queue.append(v)
    rest = [i for i in nodes if i not in seen]
    if rest:
        base = max((nodes[i].layer for i in seen), default=-1) + 1
        for k, i in enumerate(rest):
            nodes[i].layer = base + k

    layers: dict[int, list[str]] = {}
    for n in order:  # plan order first
        layers.setdefault(nodes[n.id].layer, []).append(n.id)
    depth = max(layers) + 1 if layers else 0
    rows = [layers.get(i, []) for i in range(depth)]

    def pos(row: list[str]) -> dict[str, float]:
        return {v: k for k, v in enumerate(row)}

    for _ in range(4):
        for li in range(1, depth):  # down: order by the mean position of predecessors
            above = pos(rows[li - 1])
            cur = pos(rows[li])
            rows[li].sort(key=lambda v: (sum(above[p] for p in preds[v] if p in above) / max(1, sum(1 for p in preds[v] if p in above)) if any(p in above for p in preds[v]) else cur[v], cur[v]))
        for li in range(depth - 2, -1, -1):  # up: by the mean position of successors
            below = pos(rows[li + 1])
            cur = pos(rows[li])
            rows[li].sort(key=lambda v: (sum(below[s] for s in succs[v] if s in below) / max(1, sum(1 for s in succs[v] if s in below)) if any(s in below for s in succs[v]) else cur[v], cur[v]))

    widest = max((len(r) for r in rows), default=0)
    g.width = 2 * MARGIN + widest * NODE_W + max(0, widest - 1) * GAP_X
    g.height = 2 * MARGIN + depth * NODE_H + max(0, depth - 1) * GAP_Y
    for li, row in enumerate(rows):
        row_w = len(row) * NODE_W + max(0, len(row) - 1) * GAP_X
        x0 = (g.width - row_w) / 2
        for k, v in enumerate(row):
            nodes[v].x = x0 + k * (NODE_W + GAP_X)
            nodes[v].y = MARGIN + li * (NODE_H + GAP_Y)
    for e in edges:
        a, b = nodes[e.src], nodes[e.dst]
        sx, sy = a.x + NODE_W / 2, a.y + NODE_H
        tx, ty = b.x + NODE_W / 2, b.y - (6 if e.kind == "dep" else 0)
        dy = max(20.0, (ty - sy) / 2)
        e.d = f"M{sx:.1f},{sy:.1f} C{sx:.1f},{sy + dy:.1f} {tx:.1f},{ty - dy:.1f} {tx:.1f},{ty:.1f}"
    g.nodes = [nodes[n.id] for n in order]
    g.edges = edges
    return g


# ----------------------------------------------------------------------------- the page


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(default_prompts_dir())),
        autoescape=True,  # every {{ }} is HTML-escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tokens"] = fmt_tokens
    env.filters["usd"] = lambda v: f"${v:.4f}"
    env.filters["secs"] = lambda ms: f"{(ms or 0) / 1000:.1f} s"
    env.filters["pct"] = lambda v: f"{v:.0%}"
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False)
    env.filters["ts"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S UTC") if d else "—"
    return env


def wall_time(seconds: float) -> str:
    """Wall time at the resolution of the timestamps it comes from (whole seconds)."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _step_title(s: TraceStep) -> str:
    if s.role == "executor":
        return f"{s.node} {s.node_title or ''}".strip()
    if s.commit:
        return s.commit.subject.split(": ", 1)[-1]
    return s.role


def render_html(trace: Trace) -> str:
    """The trace as one HTML document (a string)."""
    steps = trace.steps
    max_ms = max((s.duration_ms for s in steps), default=0) or 1
    total_cost = trace.totals.cost_usd
    total_tokens = trace.totals.tokens

    def share(row) -> float:  # a breakdown row's share, by cost (or tokens when free)
        if total_cost > 0:
            return row.cost_usd / total_cost
        return row.usage.total / total_tokens if total_tokens else 0.0

    start = trace.created_at
    offsets = {s.seq: max(0.0, (s.started_at - start).total_seconds()) if s.started_at else None for s in steps}
    html = _env().get_template(TEMPLATE).render(
        t=trace,
        graph=layout_plan(trace),
        steps=steps,
        step_title=_step_title,
        max_ms=max_ms,
        offsets=offsets,
        share=share,
        script=Markup(_SCRIPT),  # our own code, not branch content
        csp=_csp(_SCRIPT),
        version=__version__,
        wall=wall_time(trace.totals.wall_seconds),
    )
    return html


def write_html(trace: Trace, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(trace), encoding="utf-8")
    return p

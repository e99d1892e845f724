"""The trace as one self-contained HTML page: no network request of any kind (inline CSS and
JS, no fonts, no CDN; a Content-Security-Policy that forbids loads), the plan drawn as inline
SVG by a small layered DAG layout, the timeline, every step's code, observations and result in
folded ``<details>``, and the cost per model and per role.

Everything from the branch is model output and is HTML-escaped by the template's autoescape;
the only markup passed through unescaped is this module's own script and the answer, rendered
from markdown and cleaned by ``gitops_agent.safety.text.markdown_html``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

from gitops_agent import __version__
from gitops_agent.observe.charts import Charts
from gitops_agent.observe.render import fmt_tokens
from gitops_agent.observe.trace import Trace, TraceNode, TraceStep
from gitops_agent.safety.text import markdown_html
from gitops_agent.templates.env import template_env
from gitops_agent.templates.prompts import packaged_prompts_dir

__all__ = ["render_html", "write_html", "layout_plan", "PlanGraph"]

TEMPLATE = "trace.html.j2"

# Node box and gaps of the plan graph, in SVG units (px at 100%).
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 200, 64, 28, 54, 16
VIRTUAL_W = 8  # a long edge's way through a layer

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
        if not self.is_leaf:
            parts.append(f"group · {self.status}")
        elif self.status == "running":
            parts.append(
                ("step " if len(self.steps) == 1 else "steps ") + ", ".join(map(str, self.steps)) if self.steps else self.agent
            )
            parts.append("running")
        elif self.steps:
            parts.append(("step " if len(self.steps) == 1 else "steps ") + ", ".join(map(str, self.steps)))
            parts.append(f"{self.duration_ms / 1000:.1f} s")
            parts.append(f"${self.cost_usd:.4f}")
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
    """A layered (Sugiyama-style) layout of the plan: a node sits below everything it depends
    on and below its parent (longest-path layers); an edge that spans several layers runs
    through virtual points, one per layer, so it goes around the nodes in between; nodes and
    points in a layer are ordered by the mean position of their neighbours (barycentre sweeps);
    edges leave and enter a box at spread-out ports and are drawn as vertical cubic curves."""
    g = PlanGraph()
    if trace.plan is None:
        return g
    order: list[TraceNode] = list(trace.plan.walk())
    nodes = {
        n.id: GraphNode(
            n.id, n.title, n.goal, n.status.value, n.mark, n.agent, not n.children, list(n.steps), n.cost_usd, n.duration_ms
        )
        for n in order
    }
    edges = _plan_edges(order)
    layer = _longest_path_layers(list(nodes), edges)
    for i, n in nodes.items():
        n.layer = layer[i]
    lay = _with_virtual_points(list(nodes), edges, layer)
    rows = _layer_rows(order, lay.layer)
    _order_rows(rows, lay)
    cx, top = _place(g, rows, lay.width_of)
    for i, n in nodes.items():
        n.x, n.y = cx[i] - NODE_W / 2, top[i]
    _route_edges(edges, lay.chains, cx, top)
    g.nodes = [nodes[n.id] for n in order]
    g.edges = edges
    return g


def _plan_edges(order: list[TraceNode]) -> list[GraphEdge]:
    """Parent → child and dependency → dependent, each pair once (a tree edge wins)."""
    by_id = {n.id: n for n in order}
    edges: list[GraphEdge] = []
    seen_pairs: set[tuple[str, str]] = set()
    for n in order:
        for c in n.children:
            edges.append(GraphEdge(n.id, c.id, "tree"))
            seen_pairs.add((n.id, c.id))
        for d in n.depends_on:
            if d in by_id and (d, n.id) not in seen_pairs:
                edges.append(GraphEdge(d, n.id, "dep"))
                seen_pairs.add((d, n.id))
    return edges


def _longest_path_layers(ids: list[str], edges: list[GraphEdge]) -> dict[str, int]:
    """Longest-path layering (Kahn); anything left in a cycle goes below the rest."""
    preds: dict[str, list[str]] = {i: [] for i in ids}
    succs: dict[str, list[str]] = {i: [] for i in ids}
    for e in edges:
        preds[e.dst].append(e.src)
        succs[e.src].append(e.dst)
    layer = {i: 0 for i in ids}
    indeg = {i: len(p) for i, p in preds.items()}
    queue = [i for i in ids if indeg[i] == 0]
    done: list[str] = []
    while queue:
        u = queue.pop(0)
        done.append(u)
        for v in succs[u]:
            layer[v] = max(layer[v], layer[u] + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                queue.append(v)
    base = max((layer[i] for i in done), default=-1) + 1
    for k, i in enumerate(i for i in ids if i not in done):
        layer[i] = base + k
    return layer


@dataclass
class _Layering:
    """The layers with the virtual points of long edges in them ("\\0<edge>:<layer>")."""

    layer: dict[str, int]  # node or virtual point -> layer
    width_of: dict[str, float]
    up: dict[str, list[str]]  # the neighbours one layer up
    down: dict[str, list[str]]  # ... and one layer down
    chains: list[list[str]]  # per edge: src, virtual..., dst


def _with_virtual_points(ids: list[str], edges: list[GraphEdge], layer: dict[str, int]) -> _Layering:
    """A virtual point per layer an edge crosses (edges that go upwards, only possible around a
    cycle, stay direct); adds the points to ``layer``."""
    lay = _Layering(layer, {i: NODE_W for i in ids}, {i: [] for i in ids}, {i: [] for i in ids}, [])
    for k, e in enumerate(edges):
        chain = [e.src]
        for li in range(layer[e.src] + 1, layer[e.dst]):
            v = f"\0{k}:{li}"
            layer[v] = li
            lay.width_of[v] = VIRTUAL_W
            lay.up[v], lay.down[v] = [], []
            chain.append(v)
        chain.append(e.dst)
        for a, b in zip(chain, chain[1:]):
            lay.down[a].append(b)
            lay.up[b].append(a)
        lay.chains.append(chain)
    return lay


def _layer_rows(order: list[TraceNode], layer: dict[str, int]) -> list[list[str]]:
    """The nodes (in plan order) and then the virtual points of each layer."""
    depth = max(layer.values()) + 1 if layer else 0
    rows: list[list[str]] = [[] for _ in range(depth)]
    for n in order:
        rows[layer[n.id]].append(n.id)
    for v in layer:
        if v.startswith("\0"):
            rows[layer[v]].append(v)
    return rows


def _bary(v: str, nbrs: list[str], where: dict[str, int], cur: dict[str, int]) -> tuple[float, int]:
    ps = [where[p] for p in nbrs if p in where]
    return (sum(ps) / len(ps) if ps else cur[v], cur[v])


def _order_rows(rows: list[list[str]], lay: _Layering) -> None:
    """Barycentre sweeps, down then up, six times: fewer crossings."""
    depth = len(rows)
    for _ in range(6):
        for li in range(1, depth):
            above = {v: k for k, v in enumerate(rows[li - 1])}
            cur = {v: k for k, v in enumerate(rows[li])}
            rows[li].sort(key=lambda v: _bary(v, lay.up[v], above, cur))
        for li in range(depth - 2, -1, -1):
            below = {v: k for k, v in enumerate(rows[li + 1])}
            cur = {v: k for k, v in enumerate(rows[li])}
            rows[li].sort(key=lambda v: _bary(v, lay.down[v], below, cur))


def _place(g: PlanGraph, rows: list[list[str]], width_of: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Sets the graph's size; returns the centre x and the top y of every node and point (rows centred)."""

    def row_width(row: list[str]) -> float:
        return sum(width_of[v] for v in row) + max(0, len(row) - 1) * GAP_X

    depth = len(rows)
    widest = max((row_width(r) for r in rows), default=0.0)
    g.width = 2 * MARGIN + widest
    g.height = 2 * MARGIN + depth * NODE_H + max(0, depth - 1) * GAP_Y
    cx: dict[str, float] = {}
    top: dict[str, float] = {}
    for li, row in enumerate(rows):
        x = MARGIN + (widest - row_width(row)) / 2
        for v in row:
            cx[v] = x + width_of[v] / 2
            top[v] = MARGIN + li * (NODE_H + GAP_Y)
            x += width_of[v] + GAP_X
    return cx, top


def _ports(ends: dict[str, list[tuple[float, int]]], cx: dict[str, float]) -> dict[int, float]:
    """The edges leaving (entering) a box spread along its bottom (top), ordered by where they go."""
    out: dict[int, float] = {}
    for v, items in ends.items():
        items.sort()
        span = NODE_W * 0.6
        for j, (_, k) in enumerate(items):
            out[k] = cx[v] + (0.0 if len(items) == 1 else -span / 2 + span * j / (len(items) - 1))
    return out


def _route_edges(edges: list[GraphEdge], chains: list[list[str]], cx: dict[str, float], top: dict[str, float]) -> None:
    """Sets each edge's SVG path: from its port, through its virtual points, to its port."""
    outs: dict[str, list[tuple[float, int]]] = {}
    ins: dict[str, list[tuple[float, int]]] = {}
    for k, chain in enumerate(chains):
        outs.setdefault(chain[0], []).append((cx[chain[1]], k))
        ins.setdefault(chain[-1], []).append((cx[chain[-2]], k))
    out_x, in_x = _ports(outs, cx), _ports(ins, cx)

    for k, (e, chain) in enumerate(zip(edges, chains)):
        pts = [(out_x[k], top[chain[0]] + NODE_H)]
        for v in chain[1:-1]:  # through the virtual points, top to bottom of their layer
            pts += [(cx[v], top[v]), (cx[v], top[v] + NODE_H)]
        pts.append((in_x[k], top[chain[-1]] - (6 if e.kind == "dep" else 0)))
        e.d = _svg_path(pts)


def _svg_path(pts: list[tuple[float, float]]) -> str:
    """Straight where a segment is vertical (or goes up), a vertical cubic curve where it bends."""
    d = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
    for (x1, y1), (x2, y2) in zip(pts, pts[1:]):
        if abs(x1 - x2) < 0.5 or y2 <= y1:
            d.append(f"L{x2:.1f},{y2:.1f}")
        else:
            dy = max(12.0, (y2 - y1) / 2)
            d.append(f"C{x1:.1f},{y1 + dy:.1f} {x2:.1f},{y2 - dy:.1f} {x2:.1f},{y2:.1f}")
    return " ".join(d)


# ----------------------------------------------------------------------------- the page


def _env() -> jinja2.Environment:
    env = template_env([packaged_prompts_dir()], autoescape=True)  # every {{ }} is HTML-escaped
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


def render_html(trace: Trace, charts: Charts | None = None) -> str:
    """The trace as one HTML document (a string); ``charts`` (gitops_agent.observe.charts, their
    bytes checked there) are embedded as data: URIs, the only images the page's CSP allows."""
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
    html = (
        _env()
        .get_template(TEMPLATE)
        .render(
            t=trace,
            graph=layout_plan(trace),
            steps=steps,
            step_title=_step_title,
            max_ms=max_ms,
            offsets=offsets,
            share=share,
            script=Markup(_SCRIPT),  # our own code, not branch content
            answer_html=Markup(markdown_html(trace.answer)) if trace.answer else None,  # rendered, then sanitised
            # plain values: the template's sandbox calls no method of ours
            charts=[{"src": c.data_uri(), "name": c.name, "rel": c.rel, "node": c.node} for c in (charts or Charts()).shown],
            charts_left_out=list((charts or Charts()).left_out),
            csp=_csp(_SCRIPT),
            version=__version__,
            wall=wall_time(trace.totals.wall_seconds),
        )
    )
    return html


def write_html(trace: Trace, path: str | Path, charts: Charts | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(trace, charts), encoding="utf-8")
    return p

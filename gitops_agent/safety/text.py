"""The one sanitiser for text that crosses a trust boundary, built on a real Markdown parser
(markdown-it-py, CommonMark with GitHub's tables and strikethrough, rendered back by mdformat)
and a real HTML sanitiser (nh3, Rust's ammonia) -- not regular expressions over Markdown.

In (GitHub -> the model): ``inbound`` keeps what a person reading the issue on GitHub sees and
drops what they do not: HTML comments, link reference definitions (``[//]: # (...)``), the
markup of raw HTML (its visible text stays), image URLs, and invisible characters (Unicode tag
characters U+E0000-E007F, bidirectional controls, zero-width and other format characters,
variation selectors used to smuggle bytes). ``quote`` then shows the text to the model as data,
with who wrote it and whether they can write to the repository.

Out (the model -> GitHub): ``outbound`` makes the model's Markdown safe to post: what the code
printed, quoted in it, becomes fenced code, as printed (``gitops_agent/safety/fences.py``); no
hidden text (raw HTML is shown as code, never rendered: no comments, hidden elements, ``<img>``),
no remote image except from allowed hosts or the task's own repository at a commit (charts:
``OwnImages``; GitHub's image proxy would fetch any other URL, and data would leave although the
sandbox has no network), ``@mentions`` neutralised (shown as code, nobody is notified), and
gitops-agent's own comment markers defused.

Logs: ``log_line`` makes model text one line that cannot be a workflow command (``::warning::``,
``::add-mask::``, ``::stop-commands::``), with control characters escaped.
"""

from __future__ import annotations

import html
import re
from urllib.parse import unquote, urlsplit

import mdformat
import mdformat.plugins
import nh3
from markdown_it.token import Token
from pydantic import BaseModel, ConfigDict, field_validator

from gitops_agent.git.messages import defuse_closing
from gitops_agent.safety.chars import log_line, quote, strip_invisible, terminal_text  # noqa: F401 - one place to import from
from gitops_agent.safety.fences import output_as_code

# Hosts whose images may be shown (GitHub's own: fetched from GitHub, not from a third party).
# Where GitHub itself keeps uploaded images. Never camo.githubusercontent.com: anyone can get a camo
# URL for any address from GitHub's Markdown API, so it is a way to the outside.
DEFAULT_IMAGE_HOSTS = (
    "github.com/user-attachments/",
    "user-images.githubusercontent.com",
    "private-user-images.githubusercontent.com",
)
_MARKER = re.compile(r"gitops-agent:(?=(task|answer|refused)=)", re.I)
# GitHub links a mention after any character that is not a word character (x.@a, -@a, /@a too)
# no lookbehind for a backtick: an escaped "\`" renders as a backtick, and "@x" after it would ping
_MENTION = re.compile(r"(?<![\w])@([A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:/[A-Za-z0-9_.-]+)?)")


# ----------------------------------------------------------------------------- markdown


class OwnImages(BaseModel):
    """Images of the task's own repository that ``outbound`` shows besides ``image_hosts``: a
    file at a full commit sha under ``raw_prefix`` (``https://github.com/OWNER/REPO/raw/``: the
    pull request body, the answer comment), or a relative path (``relative``: report.md, which
    GitHub resolves in the same repository and commit). Either way GitHub serves the repository's
    own file: no URL the model chose is fetched. A branch name instead of a sha is refused (a later
    push could change what it shows), as is any ``..``, query or fragment."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    raw_prefix: str | None = None
    relative: bool = False

    @field_validator("raw_prefix")
    @classmethod
    def _raw(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("https://") and v.endswith("/raw/")):
            raise ValueError(f"raw_prefix must be https://HOST/OWNER/REPO/raw/, not {v!r}")
        return v


_SHA = re.compile(r"[0-9a-f]{40}")


def _repo_path(path: str) -> bool:
    """A path inside the repository: no empty, '.' or '..' part (percent-encoded ones too), no backslash."""
    plain = unquote(path)
    if not plain or "\\" in plain or not plain.isprintable():
        return False
    return all(part not in ("", ".", "..") for part in plain.split("/"))


def _own_image(url: str, own: OwnImages | None) -> bool:
    """Whether ``url`` is an image of the task's own repository (see OwnImages)."""
    if own is None or "?" in url or "#" in url:
        return False
    if own.raw_prefix and url.startswith(own.raw_prefix):
        sha, _, path = url[len(own.raw_prefix) :].partition("/")
        return bool(_SHA.fullmatch(sha)) and _repo_path(path)
    if own.relative:
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        return not (parts.scheme or parts.netloc or url.startswith("/")) and _repo_path(url)
    return False


def _host_allowed(url: str, hosts: tuple[str, ...]) -> bool:
    """Whether ``url`` is https on one of ``hosts`` ("host", "*.domain" or "host/path-prefix")."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password or parts.port:
        return False
    host = parts.hostname.lower()
    for h in hosts:
        h = h.lower()
        name, _, path = h.partition("/")
        if path and not parts.path.startswith("/" + path):
            continue
        if name.startswith("*.") and (host.endswith(name[1:]) or host == name[2:]):
            return True
        if host == name:
            return True
    return False


def _text(content: str) -> Token:
    t = Token("text", "", 0)
    t.content = content
    return t


def _code(content: str) -> Token:
    t = Token("code_inline", "code", 0)
    t.content = content
    t.markup = "`"
    return t


def _visible_html(fragment: str) -> str:
    """What a browser shows of an HTML fragment: its text, no tags, no comments."""
    return html.unescape(nh3.clean(fragment, tags=set(), strip_comments=True))


def _defuse(s: str) -> str:
    """No forged comment marker, no issue-closing keyword."""
    return defuse_closing(_MARKER.sub("gitops-agent :", s))


def _safe_text(s: str) -> list[Token]:
    """Text tokens for posting: markers and closing keywords defused, mentions as code."""
    out: list[Token] = []
    s = _defuse(s)
    pos = 0
    for m in _MENTION.finditer(s):
        if m.start() > pos:
            out.append(_text(s[pos : m.start()]))
        out.append(_code(m.group(0)))
        pos = m.end()
    if pos < len(s):
        out.append(_text(s[pos:]))
    return out


def _inline(children: list[Token], mode: str, hosts: tuple[str, ...], own: OwnImages | None = None) -> list[Token]:
    out: list[Token] = []
    for c in children:
        if c.type == "html_inline":
            if mode == "in":
                if not c.content.lstrip().startswith("<!--"):
                    vis = _visible_html(c.content)
                    if vis:
                        out.append(_text(vis))
            else:
                out.extend(_safe_text(c.content))  # shown, never rendered
        elif c.type == "image":
            alt = "".join(x.content for x in (c.children or []) if x.type in ("text", "code_inline")) or c.content
            src = c.attrGet("src") or ""
            if mode == "out" and (_host_allowed(str(src), hosts) or _own_image(str(src), own)):
                c.children = _inline(c.children or [], mode, hosts)  # the alt text is text too
                c.content = _defuse(c.content)
                if c.attrGet("title"):
                    c.attrSet("title", _MENTION.sub(lambda m: m.group(0).replace("@", "@ "), _defuse(str(c.attrGet("title")))))
                out.append(c)
            elif mode == "in":
                out.append(_text(f"[image: {alt}]" if alt else "[image]"))
            else:
                host = urlsplit(str(src)).hostname or "elsewhere"
                out.extend(_safe_text(f"[image from {host} not shown" + (f": {alt}]" if alt else "]")))
        elif c.type == "link_open" and mode == "out" and c.attrGet("title"):
            c.attrSet("title", _MENTION.sub(lambda m: m.group(0).replace("@", "@ "), _defuse(str(c.attrGet("title")))))
            out.append(c)
        elif c.type == "text":
            out.extend(_safe_text(c.content) if mode == "out" else [c])
        elif c.type == "code_inline" and mode == "out":
            c.content = _defuse(c.content)
            out.append(c)
        else:
            out.append(c)
    return out


_FOOTNOTE_DEF = re.compile(r"\[\^([^\]\s]+)\]:")
_FOOTNOTE_REF = re.compile(r"\[\^([^\]\s]+)\](?!:)")


def _drop_unreferenced_footnotes(tokens: list[Token]) -> list[Token]:
    """GitHub shows a footnote definition only when the text refers to it: an unreferenced one is
    hidden text (inbound)."""
    refs = {m.group(1) for t in tokens if t.type == "inline" for m in _FOOTNOTE_REF.finditer(t.content)}
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.type == "paragraph_open" and i + 2 < len(tokens) and tokens[i + 1].type == "inline":
            m = _FOOTNOTE_DEF.match(tokens[i + 1].content)
            if m and m.group(1) not in refs:
                i += 3  # paragraph_open, inline, paragraph_close
                continue
        out.append(t)
        i += 1
    return out


def _rewrite(tokens: list[Token], mode: str, hosts: tuple[str, ...], own: OwnImages | None = None) -> list[Token]:
    if mode == "in":
        tokens = _drop_unreferenced_footnotes(tokens)
    out: list[Token] = []
    for t in tokens:
        if t.type == "html_block":
            if mode == "in":
                vis = _visible_html(t.content).strip()
                if vis:
                    p_open, inline, p_close = (
                        Token("paragraph_open", "p", 1),
                        Token("inline", "", 0),
                        Token("paragraph_close", "p", -1),
                    )
                    inline.content, inline.children = vis, [_text(" ".join(vis.split()))]
                    out += [p_open, inline, p_close]
            else:
                fence = Token("fence", "code", 0)
                body = _defuse(t.content)
                fence.content, fence.info, fence.markup = body if body.endswith("\n") else body + "\n", "html", "```"
                out.append(fence)
            continue
        if t.type == "inline" and t.children is not None:
            t.children = _inline(t.children, mode, hosts, own)
        elif t.type in ("fence", "code_block") and mode == "out":
            t.content = _defuse(t.content)
        out.append(t)
    return out


class _Sanitize:
    """An mdformat parser extension: a markdown-it core rule that rewrites the token stream."""

    CHANGES_AST = True
    RENDERERS: dict = {}

    @staticmethod
    def update_mdit(mdit) -> None:  # noqa: ANN001 - mdformat's interface
        def rule(state) -> None:  # noqa: ANN001
            opts = state.md.options.get("mdformat", {})
            mode = opts.get("gitops_sanitize")
            if mode:
                hosts = tuple(opts.get("gitops_image_hosts") or ())
                state.tokens = _rewrite(state.tokens, mode, hosts, opts.get("gitops_own_images"))

        mdit.core.ruler.push("gitops_sanitize", rule)


_EXT = "gitops_agent_sanitize"
mdformat.plugins.PARSER_EXTENSIONS[_EXT] = _Sanitize  # type: ignore[index]


def _format(md: str, mode: str, hosts: tuple[str, ...], own: OwnImages | None = None) -> str:
    exts = [_EXT] + (["gfm"] if "gfm" in mdformat.plugins.PARSER_EXTENSIONS else [])
    opts = {"gitops_sanitize": mode, "gitops_image_hosts": list(hosts), "compact_tables": True}  # tables as written
    if own is not None:
        opts["gitops_own_images"] = own
    return mdformat.text(md, options=opts, extensions=exts)


def _fallback(md: str) -> str:
    """When the Markdown cannot be parsed: all of it as a code block (visible, never rendered)."""
    body = _defuse(md).replace("```", "`\u200b``")
    return f"```text\n{body}\n```\n"


def inbound(markdown: str) -> str:
    """What a person sees of ``markdown`` on GitHub, as Markdown for the model."""
    md = strip_invisible(markdown or "")
    if not md.strip():
        return ""
    try:
        return strip_invisible(_format(md, "in", ())).strip()
    except Exception:  # noqa: BLE001 - a parser failure must not pass hidden text through
        return strip_invisible(_visible_html(md)).strip()


def outbound(
    markdown: str, image_hosts: tuple[str, ...] | list[str] = DEFAULT_IMAGE_HOSTS, own_images: OwnImages | None = None
) -> str:
    """The model's ``markdown`` made safe to post on GitHub (see the module docstring);
    ``own_images``: which images of the task's own repository may be shown too (charts)."""
    md = strip_invisible(markdown or "")
    if not md.strip():
        return ""
    try:
        md = output_as_code(md)  # what code printed is quoted as printed: fenced (safety/fences.py)
        return strip_invisible(_format(md, "out", tuple(image_hosts), own_images)).strip()
    except Exception:  # noqa: BLE001
        return _fallback(md)


def inline_text(text: str, limit: int | None = None) -> str:
    """Untrusted text as one line of plain inline Markdown (titles, table cells): invisible
    characters removed, whitespace folded, Markdown and HTML syntax escaped, no @mention."""
    s = " ".join(strip_invisible(str(text or "")).split())
    if limit is not None and len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = re.sub(r"([\\`\[\]|])", r"\\\1", s)  # links, images, code, tables: only what changes structure
    return _MENTION.sub(lambda m: f"`{m.group(0)}`", _defuse(s))


# what rendered model markdown may contain in a page of ours (no image: a page opened from disk
# loads nothing; no raw HTML of the model's: it is off in the parser, nh3 is the second wall)
_PAGE_TAGS = {
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "code",
    "pre",
    "em",
    "strong",
    "blockquote",
    "hr",
    "br",
    "a",
    "del",
}


def markdown_html(markdown: str) -> str:
    """Model markdown as safe HTML for the trace page: CommonMark with tables, its HTML not
    passed, then cleaned (only _PAGE_TAGS; links http(s)/mailto only, rel=noopener noreferrer)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")
    rendered = md.render(strip_invisible(markdown or ""))
    return nh3.clean(
        rendered,
        tags=_PAGE_TAGS,
        attributes={"a": {"href", "title"}, "th": {"style"}, "td": {"style"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        filter_style_properties={"text-align"},
    )

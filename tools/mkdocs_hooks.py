"""mkdocs hook: links from docs/ pages to files the site does not hold.

Pages under docs/ are read in two places: on the repository host, where a link such as
``../../benchmarks/perf/README.md`` opens the file, and on the built site, which holds only docs/. This hook
rewrites, in the markdown of each page before mkdocs renders it:

* a link to an existing repository file outside docs/ into that file's repository path in code font
  (``benchmarks/perf/README.md``); a link to a missing file outside docs/ is reported as a warning, so
  ``mkdocs build --strict`` fails on it as on any broken link;
* in the benchmark reports that ``invgen bench report`` writes (``report.md``), a link or image pointing to a plot
  or sample grid that was not committed into a short note (the report lists every plot and grid it made; only some
  are kept in the repository).

Every other link is left to mkdocs' own validation. Links inside fenced code blocks are not touched.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.invgen")

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def _rewrite(match: re.Match[str], page_dir: Path, docs_dir: Path, repo: Path, is_report: bool, src: str) -> str:
    bang, text, target = match.groups()
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return match.group(0)  # external URL, anchor, or absolute path: mkdocs' business
    path_part = target.split("#", 1)[0]
    if not path_part:
        return match.group(0)
    resolved = (page_dir / path_part).resolve()
    if docs_dir in resolved.parents or resolved == docs_dir:
        if is_report and not resolved.exists():
            return f"*({text or 'figure'}: not in the repository)*"
        return match.group(0)
    if repo not in resolved.parents:
        log.warning("Doc file '%s' links to '%s', outside the repository", src, target)
        return match.group(0)
    if not resolved.exists():
        log.warning("Doc file '%s' links to '%s', which does not exist", src, target)
        return match.group(0)
    rel = resolved.relative_to(repo).as_posix() + ("/" if resolved.is_dir() else "")
    label = text.strip("`")
    if bang or not label or rel.startswith(label) or label.startswith(rel):
        return f"`{rel}`"
    return f"{text} (`{rel}`)"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Rewrite the links of one page (mkdocs event)."""
    docs_dir = Path(config["docs_dir"]).resolve()
    repo = Path(config["config_file_path"]).resolve().parent
    source = Path(page.file.abs_src_path)
    page_dir = source.parent.resolve()
    is_report = source.name == "report.md"
    out, fenced = [], False
    for line in markdown.split("\n"):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            line = _LINK.sub(lambda m: _rewrite(m, page_dir, docs_dir, repo, is_report, page.file.src_uri), line)
        out.append(line)
    return "\n".join(out)

"""``report.html``: one page per run folder that gathers what the run wrote.

:func:`write_report` reads the folder and writes the page (atomically) beside the files: what was run
(command, settings, versions, time taken: from ``result.json`` / ``results.json``), the paper-vs-run
claims table where the results hold one (rows ``{"setting", "paper", "found", "agrees"}`` under a key
``claims``), every figure (an interactive view where the run's command provides one, the PNG beside
it), the numbers of every JSON file as tables, and links to every file. It opens offline from the run
folder (the figures are the folder's own PNG files, linked by relative paths).

It works on any folder, also on runs made before report pages existed: what is missing is said so. A
file that is missing or cannot be read (not valid JSON, a truncated PNG, a safetensors file an
interactive figure needs) is named at the top of the page and in the returned problems, and the rest of
the page is built without it.

``figures`` maps a figure's name (the PNG it stands for, e.g. ``"tms_phase_diagram.png"``) to a function
that builds its :class:`~hooked.views.View` from the folder's files; a command provides them through a
``report_figures(folder) -> dict`` attribute of its registered function (see ``papers/*/views.py``).
"""

from __future__ import annotations

import html
import json
import math
import os
import shlex
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hooked.views.page import View, document

REPORT = "report.html"
RECORDS = ("result.json", "results.json")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TABLE_ROWS = 300
MAX_LIST = 24
MAX_JSON_BYTES = 5_000_000  # larger JSON files are linked, not tabulated
MAX_FILES = 2000

Figures = Mapping[str, Callable[[], View]]

_STYLE = """
body { margin: 18px 28px; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111;
  max-width: 1500px; }
h1 { font-size: 21px; margin-bottom: 4px; }
h2 { font-size: 16px; margin-top: 30px; border-bottom: 1px solid #ddd; }
h3 { font-size: 14px; margin: 18px 0 6px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
table.rt { border-collapse: collapse; margin: 4px 0 10px; }
table.rt th, table.rt td { border: 1px solid #ddd; padding: 2px 7px; text-align: left; vertical-align: top; }
table.rt th { background: #f4f4f4; font-weight: 600; }
table.rt td.num { text-align: right; font-family: ui-monospace, monospace; }
table.kv th { background: none; font-weight: normal; color: #555; }
.problems { border: 2px solid #c00; background: #fff3f3; padding: 6px 14px; margin: 10px 0; }
.problems li { margin: 2px 0; }
.agree-yes { background: #e3f4e1; } .agree-no { background: #fbe3e3; } .agree-see { background: #f1f1f1; }
figure { margin: 10px 0 22px; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; margin: 3px 0; }
details { margin: 4px 0 4px 4px; } summary { cursor: pointer; }
details.json > div { margin-left: 14px; }
.missing { color: #777; font-style: italic; }
.files td:nth-child(2) { text-align: right; }
nav a { margin-right: 12px; }
.side { display: flex; flex-wrap: wrap; gap: 10px 36px; align-items: flex-start; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any) -> str:
    """The class of a table cell holding ``v``: numbers align right."""
    return "num" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _details(summary: str, body: str, opened: bool = False) -> str:
    """A collapsible section (``summary`` is markup)."""
    attr = " open" if opened else ""
    return f"<details class='json'{attr}><summary>{summary}</summary><div>{body}</div></details>"


def _href(rel: str) -> str:
    from urllib.parse import quote

    return quote(rel)


class _Builder:
    def __init__(self, folder: Path):
        self.folder = folder
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    # ------------------------------------------------------------------ files
    def files(self) -> list[Path]:
        out = []
        for root, dirs, names in os.walk(self.folder):
            dirs.sort()
            for n in sorted(names):
                p = Path(root) / n
                rel = p.relative_to(self.folder)
                if rel.as_posix() == REPORT or n.startswith(".") and n.endswith(".tmp"):
                    continue
                out.append(p)
        return out

    def read_json(self, path: Path) -> Any:
        rel = path.relative_to(self.folder).as_posix()
        try:
            size = path.stat().st_size
        except OSError as e:
            self.problem(f"{rel}: cannot be read ({e.strerror or e})")
            return None
        if size > MAX_JSON_BYTES:
            return _TooLarge(size)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self.problem(f"{rel}: damaged, not valid JSON ({e})")
        except OSError as e:
            self.problem(f"{rel}: cannot be read ({e.strerror or e})")
        return None

    def png_ok(self, path: Path) -> bool:
        rel = path.relative_to(self.folder).as_posix()
        try:
            with open(path, "rb") as f:
                head = f.read(8)
                f.seek(max(0, path.stat().st_size - 12))
                tail = f.read()
        except OSError as e:
            self.problem(f"{rel}: cannot be read ({e.strerror or e})")
            return False
        if head != PNG_SIGNATURE:
            self.problem(f"{rel}: damaged, not a PNG image")
            return False
        if b"IEND" not in tail:
            self.problem(f"{rel}: damaged, a truncated PNG image (no end marker)")
            return False
        return True


class _TooLarge:
    def __init__(self, size: int):
        self.size = size


# ---------------------------------------------------------------------- sections
def _record(b: _Builder) -> tuple[str, dict[str, Any]]:
    """The folder's record (``result.json`` of ``hooked run``, ``results.json`` of ``hooked repro``)."""
    present = [n for n in RECORDS if (b.folder / n).is_file()]
    if not present:
        b.problem(
            f"no {' or '.join(RECORDS)} in this folder: the run did not finish, or the file was removed; "
            "the page shows the other files"
        )
        return "", {}
    name = present[0]
    data = b.read_json(b.folder / name)
    if isinstance(data, _TooLarge) or not isinstance(data, dict):
        if data is not None and not isinstance(data, _TooLarge):
            b.problem(f"{name}: damaged, expected a JSON object, found {type(data).__name__}")
        return name, {}
    return name, data


def _title(record: dict[str, Any], folder: Path) -> str:
    if "analysis" in record:
        return f"hooked run {record['analysis']}"
    if "repro" in record:
        return f"hooked repro {record['repro']}"
    return f"run folder {folder.name}"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _e(json.dumps(v))
    if isinstance(v, float):
        return _e("NaN" if math.isnan(v) else f"{v:.6g}")
    if isinstance(v, (list, tuple)):
        text = json.dumps(v)
        return _e(text if len(text) < 400 else f"[{len(v)} values]")
    if isinstance(v, dict):
        return _e(json.dumps(v)) if len(json.dumps(v)) < 200 else f"{{{len(v)} entries}}"
    return _e(v)


def _kv(items: list[tuple[str, Any]], raw: bool = False) -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td class='{_num(v)}'>{v if raw else _fmt(v)}</td></tr>" for k, v in items
    )
    return f"<table class='rt kv'>{rows}</table>"


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)) or isinstance(s, bool):
        return "not recorded"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min ({s:.0f} s)"


def _what_was_run(b: _Builder, name: str, record: dict[str, Any]) -> str:
    missing = "<span class='missing'>not recorded (a run made before report pages)</span>"
    cmd = record.get("command")
    if isinstance(cmd, list):
        cmd_html = f"<code>{_e(shlex.join(str(c) for c in cmd))}</code>"
    elif isinstance(cmd, str):
        cmd_html = f"<code>{_e(cmd)}</code>"
    else:
        cmd_html = missing
    when = record.get("started")
    if not when and name:
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((b.folder / name).stat().st_mtime))
            + " (written)"
        )
    items: list[tuple[str, Any]] = [
        ("command", cmd_html),
        ("folder", f"<code>{_e(b.folder.resolve())}</code>"),
    ]
    for key in ("analysis", "repro", "model", "hook", "checkpoint"):
        if key in record and record[key] is not None:
            items.append((key, _e(record[key])))
    items += [("started", _e(when) if when else missing), ("time taken", _e(_seconds(record.get("seconds"))))]
    out = [_kv(items, raw=True)]
    side = []
    for key, label in (("options", "settings"), ("model_options", "model settings")):
        opts = record.get(key)
        if isinstance(opts, dict) and opts:
            side.append(f"<div><h3>{_e(label)}</h3>{_kv(list(opts.items()))}</div>")
    versions = record.get("versions")
    side.append(
        "<div><h3>versions</h3>"
        + (_kv(list(versions.items())) if isinstance(versions, dict) else missing)
        + "</div>"
    )
    out.append(f"<div class='side'>{''.join(side)}</div>")
    return "\n".join(out)


def _find_claims(obj: Any, found: list[list[dict]], depth: int = 0) -> None:
    if depth > 8:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "claims" and _is_claims(v):
                if v not in found:
                    found.append(v)
            else:
                _find_claims(v, found, depth + 1)
    elif isinstance(obj, list) and len(obj) < 1000:
        for v in obj:
            _find_claims(v, found, depth + 1)


def _is_claims(v: Any) -> bool:
    keys = {"setting", "paper", "found", "agrees"}
    return isinstance(v, list) and bool(v) and all(isinstance(r, dict) and keys <= set(r) for r in v)


def _claims_table(rows: list[dict]) -> str:
    cls = {"yes": "agree-yes", "no": "agree-no"}
    body = "".join(
        f"<tr class='{cls.get(str(r['agrees']), 'agree-see')}'>"
        + "".join(f"<td>{_e(r[k])}</td>" for k in ("setting", "paper", "found", "agrees"))
        + "</tr>"
        for r in rows
    )
    agree = sum(str(r["agrees"]) == "yes" for r in rows)
    disagree = sum(str(r["agrees"]) == "no" for r in rows)
    return (
        f"<p>{agree} of {len(rows)} claims agree ({disagree} do not; the rest need the plots).</p>"
        "<table class='rt claims'><tr><th>setting</th><th>the paper says</th>"
        f"<th>this run found</th><th>agrees</th></tr>{body}</table>"
    )


def _figures(b: _Builder, figures: Figures, pngs: list[Path]) -> tuple[str, list[View]]:
    parts, views, replaced = [], [], set()
    for name, build in figures.items():
        try:
            view = build()
        except Exception as e:  # a command's own figure code: whatever fails is named, the PNG shown
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            b.problem(
                f"interactive figure {name}: not built ({type(e).__name__}: {msg}); the PNG is shown instead"
            )
            continue
        views.append(view)
        png = b.folder / name
        static = ""
        if name.endswith(".png") and png.is_file():
            replaced.add(png)
            if b.png_ok(png):
                img = f"<img src='{_href(name)}' alt='{_e(name)}'>"
                static = f"<details><summary>static PNG: {_e(name)}</summary>{img}</details>"
        caption = f"<figcaption>{_e(name)} (interactive)</figcaption>"
        parts.append(f"<figure class='interactive'>{view.fragment()}{caption}{static}</figure>")
    for png in pngs:
        if png in replaced:
            continue
        rel = png.relative_to(b.folder).as_posix()
        if b.png_ok(png):
            img = f"<img src='{_href(rel)}' alt='{_e(rel)}' loading='lazy'>"
            parts.append(f"<figure>{img}<figcaption>{_e(rel)}</figcaption></figure>")
    return "\n".join(parts) or "<p class='missing'>no figures in this folder</p>", views


def _table_of_rows(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows[:MAX_TABLE_ROWS]:
        cols += [k for k in r if k not in cols]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(f"<td class='{_num(r.get(c))}'>{_fmt(r[c]) if c in r else ''}</td>" for c in cols)
        + "</tr>"
        for r in rows[:MAX_TABLE_ROWS]
    )
    more = (
        f"<p class='missing'>{len(rows) - MAX_TABLE_ROWS} more rows in the file</p>"
        if len(rows) > MAX_TABLE_ROWS
        else ""
    )
    return f"<table class='rt'><tr>{head}</tr>{body}</table>{more}"


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _numbers_summary(v: list) -> str:
    flat: list[Any] = []
    stack = [v]
    shape = []
    cur: Any = v
    while isinstance(cur, list):
        shape.append(len(cur))
        cur = cur[0] if cur else None
    while stack and len(flat) < 200_000:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        else:
            flat.append(x)
    nums = [x for x in flat if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]
    rng = f", finite values {min(nums):.4g} .. {max(nums):.4g}" if nums else ""
    bad = len(flat) - len(nums)
    return f"{' x '.join(map(str, shape))} values{rng}" + (f" ({bad} not finite numbers)" if bad else "")


def _render(obj: Any, depth: int = 0) -> str:
    """Nested JSON as tables: a dict's plain values as a name/value table, lists of flat records as a
    table, long lists of numbers summarised, nested parts in collapsible sections."""
    if depth > 7:
        return f"<code>{_e(json.dumps(obj)[:300])}</code>"
    if isinstance(obj, dict):
        flat = [
            (k, v)
            for k, v in obj.items()
            if _scalar(v) or (isinstance(v, list) and len(v) <= MAX_LIST and all(_scalar(x) for x in v))
        ]
        nested = [(k, v) for k, v in obj.items() if (k, v) not in flat]
        out = [_kv(flat)] if flat else []
        for k, v in nested:
            out.append(_details(_e(k), _render(v, depth + 1), opened=depth < 1))
        return "\n".join(out) or "<span class='missing'>(empty)</span>"
    if isinstance(obj, list):
        if not obj:
            return "<span class='missing'>(empty list)</span>"
        if all(
            isinstance(r, dict) and all(_scalar(x) or isinstance(x, list) for x in r.values()) for r in obj
        ):
            return _table_of_rows(obj)
        if all(_scalar(x) for x in obj):
            text = json.dumps(obj) if len(obj) <= MAX_LIST else _numbers_summary(obj)
            return f"<span class='mono'>{_e(text)}</span>"
        if all(_scalar(x) or isinstance(x, list) for x in obj):  # a matrix
            return f"<span class='mono'>{_e(_numbers_summary(obj))}</span>"
        return "\n".join(
            _details(f"[{i}]", _render(v, depth + 1)) for i, v in enumerate(obj[:MAX_TABLE_ROWS])
        )
    return _fmt(obj)


def build_report(
    folder: str | os.PathLike, *, figures: Figures | Callable[[Path], Figures] | None = None
) -> tuple[str, list[str]]:
    """The report page of ``folder`` and the problems found (each names a file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder at {folder}")
    b = _Builder(folder)
    name, record = _record(b)
    if callable(figures):
        try:
            figures = figures(folder)
        except Exception as e:  # as for each figure below
            b.problem(f"interactive figures: not built ({type(e).__name__}: {e})")
            figures = {}
    files = b.files()
    pngs = [p for p in files if p.suffix.lower() == ".png"]
    jsons = [p for p in files if p.suffix.lower() == ".json" and p.parent == folder]
    parsed: dict[str, Any] = {name: record} if name else {}
    for p in jsons:
        if p.name not in parsed:
            parsed[p.name] = b.read_json(p)
    title = _title(record, folder)
    run_html = _what_was_run(b, name, record)
    claims: list[list[dict]] = []
    for data in parsed.values():
        _find_claims(data, claims)
    claims_html = "".join(_claims_table(rows) for rows in claims)
    figures_html, views = _figures(b, figures or {}, pngs)
    tables = []
    for fname, data in parsed.items():
        if data is None:
            continue
        if isinstance(data, _TooLarge):
            body = f"<p class='missing'>{data.size / 1e6:.1f} MB: too large to show here; open the file</p>"
        else:
            body = _render(data, depth=0 if fname == name else 1)
        tables.append(_details(f"<b>{_e(fname)}</b>", body, opened=fname == name))
    rows = []
    for p in files[:MAX_FILES]:
        rel = p.relative_to(folder).as_posix()
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        rows.append(f"<tr><td><a href='{_href(rel)}'>{_e(rel)}</a></td><td>{_human(size)}</td></tr>")
    more = f"<p class='missing'>{len(files) - MAX_FILES} more files</p>" if len(files) > MAX_FILES else ""
    problems_html = (
        "<div class='problems' id='problems'><b>Problems found while building this page</b><ul>"
        + "".join(f"<li>{_e(p)}</li>" for p in b.problems)
        + "</ul></div>"
        if b.problems
        else ""
    )
    built = time.strftime("%Y-%m-%d %H:%M:%S")
    sections = [("run", "what was run"), ("claims", "claims"), ("figures", "figures"), ("numbers", "numbers")]
    nav = "".join(
        f"<a href='#{k}'>{t}</a>" for k, t in sections + [("files", "files")] if k != "claims" or claims
    )
    body = f"""<h1>{_e(title)}</h1>
<div class='mono'>{_e(folder.resolve())} &middot; page built {_e(built)}</div>
<nav>{nav}</nav>
{problems_html}
<h2 id='run'>What was run</h2>
{run_html}
{"<h2 id='claims'>The paper vs this run</h2>" + claims_html if claims else ""}
<h2 id='figures'>Figures</h2>
{figures_html}
<h2 id='numbers'>Numbers</h2>
{"".join(tables) or "<p class='missing'>no JSON files</p>"}
<h2 id='files'>Files</h2>
<table class='rt files'><tr><th>file</th><th>size</th></tr>{"".join(rows)}</table>{more}
"""
    return document(title, body, style=_STYLE), b.problems


def _human(n: float) -> str:
    if n < 0:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def write_report(
    folder: str | os.PathLike, *, figures: Figures | Callable[[Path], Figures] | None = None
) -> tuple[Path, list[str]]:
    """Build ``folder/report.html`` (atomically); returns its path and the problems found."""
    from hooked.io import atomic_write_bytes

    text, problems = build_report(folder, figures=figures)
    return atomic_write_bytes(Path(folder) / REPORT, text.encode("utf-8")), problems

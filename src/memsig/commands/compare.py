"""`memsig compare RUN_A RUN_B`: which characters two models keep, side by side.

From two finished run dirs (signature.json + chars.json) it writes, into one folder:
chars.png (the passage per offset, each character shaded by how well it is recovered k steps
later), chars.html (the same passage with an offset selector, plus the per-class table; one
file, no external assets) and chars_classes.csv (accuracy per run, character class, offset).
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memsig.reports.chars import CLASSES, load_chars
from memsig.reports.figures import chars_figure, save_figure
from memsig.runtime.atomic import json_text, write_csv_atomic, write_text_atomic
from memsig.runtime.errors import MemsigError
from memsig.signature.record import Signature

FIGURE_CHARS = 240  # characters of the passage drawn in the figure (the HTML shows all)


@dataclass
class RunChars:
    """One run's side of the comparison: its name, the chosen view and that view's results."""

    label: str
    view: str
    recall: np.ndarray  # [offsets, passage]
    class_accuracy: dict[str, list[float | None]]


def _side(run_dir: Path, view: str | None) -> tuple[RunChars, dict, Signature]:
    signature = Signature.load(run_dir)
    record = load_chars(run_dir)
    if view is None:  # the view that remembers most
        view = max(signature.views, key=lambda v: signature.views[v].capacity)
    if view not in record["views"]:
        raise MemsigError(
            f"{run_dir} has no view {view!r}; its views: {list(record['views'])} "
            "(choose one with --view-a / --view-b)"
        )
    bpc = signature.model.get("metrics", {}).get("val/bpc")
    label = f"{run_dir.name}: {signature.model.get('name')} {view}" + (
        f" (val/bpc {bpc:.3f})" if bpc is not None else ""
    )
    results = record["views"][view]
    side = RunChars(label, view, np.asarray(results["recall"]), results["class_accuracy"])
    return side, record, signature


def load_pair(
    run_a: Path, run_b: Path, view_a: str | None = None, view_b: str | None = None
) -> tuple[RunChars, RunChars, dict]:
    """Both runs' chosen views, after checking that they probed the same text the same way."""
    a, record, sig_a = _side(Path(run_a), view_a)
    b, other, sig_b = _side(Path(run_b), view_b)
    if sig_a.data.get("vocab") != sig_b.data.get("vocab"):
        raise MemsigError(
            f"{run_a} and {run_b} have different vocabularies "
            f"({len(sig_a.data['vocab'])} vs {len(sig_b.data['vocab'])} symbols): compare runs "
            "on the same data"
        )
    if sig_a.offsets != sig_b.offsets:
        raise MemsigError(
            f"{run_a} probed offsets {sig_a.offsets} but {run_b} probed {sig_b.offsets}: "
            "compare runs made with the same probe.offsets / probe.max_offset"
        )
    if record["passage"] != other["passage"]:
        raise MemsigError(
            f"{run_a} and {run_b} kept different passages: compare runs on the same data with "
            "the same probe.passage_chars"
        )
    return a, b, record


def _text(record: dict) -> list[str]:
    vocab = record["vocab"]
    return [vocab[t] for t in record["passage"]["tokens"]]


def class_rows(a: RunChars, b: RunChars, record: dict) -> list[list]:
    """(run, view, class, offset, accuracy, count) for both runs."""
    rows = []
    for side in (a, b):
        for name in CLASSES:
            for j, k in enumerate(record["offsets"]):
                count = record["class_counts"][name][j]
                rows.append([side.label, side.view, name, k, side.class_accuracy[name][j], count])
    return rows


def _cell(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.3f}"


def page(a: RunChars, b: RunChars, record: dict) -> str:
    """The self-contained HTML page (inline CSS and script, no external assets)."""
    offsets = record["offsets"]
    start = int(np.abs(a.recall.mean(1) - b.recall.mean(1)).argmax())  # where they differ most
    chars = _text(record)

    def passage(side: RunChars, key: str) -> str:
        spans = []
        for i, ch in enumerate(chars):
            p = side.recall[start, i]
            shown = "\u21b5\n" if ch == "\n" else html.escape(ch)
            ink = "#fff" if p > 0.6 else "#000"
            spans.append(
                f'<span style="background:rgba(33,102,172,{p:.3f});color:{ink}">{shown}</span>'
            )
        return (
            f'<div class="run"><h2>{html.escape(side.label)}</h2>'
            f'<pre class="passage" id="{key}">{"".join(spans)}</pre></div>'
        )

    options = "".join(
        f'<option value="{j}"{" selected" if j == start else ""}>{k}</option>'
        for j, k in enumerate(offsets)
    )
    header = "".join(f"<th>k={k}</th>" for k in offsets)
    body = []
    for name in CLASSES:
        counts = record["class_counts"][name]
        for side in (a, b):
            cells = "".join(f"<td>{_cell(v)}</td>" for v in side.class_accuracy[name])
            body.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(side.label)}</td>"
                f"<td>{int(counts[0])}</td>{cells}</tr>"
            )
    data = json_text({"a": a.recall.tolist(), "b": b.recall.tolist()}, indent=None)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>memsig: characters kept</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.runs {{ display: flex; gap: 2em; }}
.run {{ flex: 1; min-width: 0; }}
.run h2 {{ font-size: 1em; }}
pre.passage {{ white-space: pre-wrap; word-break: break-all; font-size: 14px; line-height: 1.5; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td:nth-child(-n+2) {{ text-align: left; }}
</style></head><body>
<h1>Which characters are kept, k steps later</h1>
<p>Each character x<sub>p</sub> of a probe-test passage is shaded by the probability that the
linear probe reading the state at step p+k gives it (white 0, blue 1).
Offset k: <select id="offset">{options}</select></p>
<div class="runs">{passage(a, "a")}{passage(b, "b")}</div>
<h2>Probe accuracy per character class</h2>
<p>Over the whole probe-test part; n is the number of test positions whose target is in the
class.</p>
<table><tr><th>class</th><th>run</th><th>n</th>{header}</tr>
{"".join(body)}
</table>
<script>
const recall = {data};
document.getElementById("offset").addEventListener("change", (event) => {{
  const k = Number(event.target.value);
  for (const key of ["a", "b"]) {{
    const spans = document.getElementById(key).children;
    for (let i = 0; i < spans.length; i++) {{
      const p = recall[key][k][i];
      spans[i].style.background = `rgba(33,102,172,${{p.toFixed(3)}})`;
      spans[i].style.color = p > 0.6 ? "#fff" : "#000";
    }}
  }}
}});
</script>
</body></html>
"""


def compare_chars(
    run_a: Path,
    run_b: Path,
    out_dir: Path | None = None,
    view_a: str | None = None,
    view_b: str | None = None,
) -> dict[str, Path]:
    """Write chars.png, chars.html and chars_classes.csv for two runs; returns their paths."""
    a, b, record = load_pair(run_a, run_b, view_a, view_b)
    out = Path(out_dir) if out_dir is not None else Path(run_a) / f"chars_vs_{Path(run_b).name}"
    paths = {
        "png": save_figure(
            chars_figure(_text(record)[:FIGURE_CHARS], record["offsets"], [a, b]), out / "chars.png"
        ),
        "html": out / "chars.html",
        "csv": out / "chars_classes.csv",
    }
    write_text_atomic(paths["html"], page(a, b, record))
    header = ["run", "view", "class", "offset", "accuracy", "count"]
    write_csv_atomic(paths["csv"], header, class_rows(a, b, record))
    return paths


def command(argv: Sequence[str]) -> None:
    """Parse `memsig compare` arguments and write the comparison."""
    parser = argparse.ArgumentParser(
        prog="memsig compare", description="Compare which characters two runs' states keep."
    )
    parser.add_argument("run_a", type=Path, help="first finished run dir")
    parser.add_argument("run_b", type=Path, help="second finished run dir")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_A/chars_vs_RUN_B)")
    parser.add_argument("--view-a", help="view of RUN_A (default: its highest-capacity view)")
    parser.add_argument("--view-b", help="view of RUN_B (default: its highest-capacity view)")
    args = parser.parse_args(argv)
    paths = compare_chars(args.run_a, args.run_b, args.out, args.view_a, args.view_b)
    for path in paths.values():
        print(path)

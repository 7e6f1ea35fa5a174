"""What a batch report says and shows, computed from a scored CSV alone: the summary (tallies, metrics, the
comparison of two variants or against a baseline), its figures, and the HTML page (reporting/templates/report.html).

Nothing here writes a file: `batch.py` streams, scores and writes; it calls `summary()`, `report_html()` and, for the
edge cases, `case_rows()`, `cases_summary()` and `cases_html()`. Because a summary needs only the scored CSV, shards
scored apart merge into the same report (`batch.merge`), and the app's Batch tab draws the same figures (plotly's,
`figures()`; the HTML page draws `charts()` in HTML and CSS, a few kilobytes where plotly's script weighs 4.8 MB).

A report names files by their names, never by a path: a report made on a server (the app's uploads) or from
`batch.py /abs/path/x.csv` is shared, and its folders are nobody's business.
"""

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

import model
from building import builder, files

MAX_LISTED_ROWS = 200  # misclassified or differing rows kept in the summary
HISTOGRAM_BINS = 20
COMPARE_PREFIX = "compare_"  # the second variant's columns in a scored CSV
INTENT_COLUMN = "intent"  # an input column naming each labelled row's intent (data/INTENTS.md): accuracy per intent


class BatchInputError(ValueError):
    """The input file (or a baseline) as a whole cannot be used (exit status 2 on the command line). Defined here,
    where a baseline can be refused; callers know it as `batch.BatchInputError`, the same class."""


# ---------------------------------------------------------------------------------------------
# Reading back what the project wrote
# ---------------------------------------------------------------------------------------------
def read_report(path: str | Path, chunk_size: int):
    """A CSV this project wrote (a scored report, a shard's, a baseline) in string chunks, each cell and column name as it
    was before `files.spreadsheet_safe` quoted it. Never for the user's input, which is read as it is."""
    for chunk in pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_size):
        chunk = chunk.map(files.spreadsheet_text)
        chunk.columns = [files.spreadsheet_text(name) for name in chunk.columns]
        yield chunk


# ---------------------------------------------------------------------------------------------
# The summary: one pass over the scored CSV, tallied per variant
# ---------------------------------------------------------------------------------------------
def summary(
    scored_csv: str | Path,
    text_column: str,
    label_column: str | None,
    *,
    elapsed_s: float,
    run: dict[str, Any],
    output_path: str | Path,
    baseline: str | Path | None = None,
) -> dict[str, Any]:
    """The summary of a scored CSV, read in chunks: counts, distributions and, when labelled, metrics and misclassified
    rows; with a `compare_` variant, the same for it and the rows where the two differ; `run` (what was run) and the
    pipeline's identity; `outputs`, the names of the files written beside each other. `baseline`: an earlier scored CSV of the same input,
    compared row by row (`compare_baseline`)."""
    scored_csv, output_path = Path(scored_csv), Path(output_path)
    variants = {"": _Tally(label_column), COMPARE_PREFIX: _Tally(label_column)}
    agreement = Counter()
    differing: list[dict] = []
    compared = False
    for chunk in read_report(scored_csv, 4096):
        compared = compared or COMPARE_PREFIX + model.LABEL in chunk
        for prefix, tally in variants.items():
            if prefix == "" or compared:
                tally.add(chunk, prefix, text_column)
        if compared:
            both = (chunk.error == "") & (chunk[COMPARE_PREFIX + "error"] == "")
            same = chunk[model.LABEL] == chunk[COMPARE_PREFIX + model.LABEL]
            agreement.update({"rows": int(both.sum()), "same": int((both & same).sum())})
            for i, row in chunk[both & ~same].iterrows():
                if len(differing) < MAX_LISTED_ROWS:
                    differing.append(_listed(row, i, text_column, label_column, with_compare=True))
    manifest = builder.manifest()
    out = {
        **variants[""].summary(),
        "elapsed_s": round(elapsed_s, 3),
        "rows_per_s": round(variants[""].rows / elapsed_s, 1) if elapsed_s > 0 else None,
        "text_column": text_column,
        "label_column": label_column,
        **run,
        "pipeline_version": manifest["pipeline_version"],
        "version": manifest.get("version", "artifacts"),  # the version that answered (versions.py)
        "model": manifest["model"],
        "encoder": manifest["encoder"],
        "data": manifest["data"],
        "artifacts_built_at": manifest["built_at"],
        "outputs": {kind: output_path.with_suffix(kind).name for kind in (".csv", ".html", ".json")},
    }
    if compared:
        out["compare"] = {
            **variants[COMPARE_PREFIX].summary(),
            "agreement": round(agreement["same"] / agreement["rows"], 4) if agreement["rows"] else None,
            "differing_rows": differing,
            "differing_total": agreement["rows"] - agreement["same"],
        }
    if baseline is not None:
        out["baseline"] = compare_baseline(scored_csv, baseline, text_column, label_column, out)
    return out


class _Tally:
    """Running counts for one variant: what the summary and the plots need, never the rows themselves."""

    def __init__(self, label_column: str | None):
        self.label_column = label_column
        self.rows = self.errors = 0
        self.categories, self.teams, self.pairs = Counter(), Counter(), Counter()
        self.confidence_sum = 0.0
        self.histogram = [0] * HISTOGRAM_BINS  # confidence counts in bins of 0.05
        self.needs_human = 0
        self.misclassified: list[dict] = []
        self.misclassified_total = 0
        self.intents = Counter()  # (category expected, intent, right) -> rows, when the input has an intent column

    def add(self, chunk: pd.DataFrame, prefix: str, text_column: str) -> None:
        self.rows += len(chunk)
        ok = chunk[chunk[prefix + "error"] == ""]
        self.errors += len(chunk) - len(ok)
        self.categories.update(ok[prefix + model.LABEL])
        self.teams.update(ok[prefix + "team"])
        confidences = ok[prefix + "confidence"].astype(float)
        self.confidence_sum += float(confidences.sum())
        for k in (confidences * HISTOGRAM_BINS).astype(int).clip(upper=HISTOGRAM_BINS - 1):
            self.histogram[k] += 1
        self.needs_human += int((ok[prefix + "needs_human"] == "True").sum())
        if self.label_column:
            self.pairs.update(zip(ok[self.label_column], ok[prefix + model.LABEL], strict=True))
            wrong = ok[ok[self.label_column] != ok[prefix + model.LABEL]]
            self.misclassified_total += len(wrong)
            if INTENT_COLUMN in ok and self.label_column != INTENT_COLUMN:
                right = ok[self.label_column] == ok[prefix + model.LABEL]
                named = ok[INTENT_COLUMN] != ""
                self.intents.update(zip(ok[self.label_column][named], ok[INTENT_COLUMN][named], right[named], strict=True))
            for i, row in wrong.head(MAX_LISTED_ROWS - len(self.misclassified)).iterrows():
                self.misclassified.append(_listed(row, i, text_column, self.label_column, prefix=prefix))

    def summary(self) -> dict[str, Any]:
        scored = self.rows - self.errors
        out = {
            "rows": self.rows,
            "errors": self.errors,
            "category_distribution": dict(self.categories.most_common()),
            "team_distribution": dict(self.teams.most_common()),
            "mean_confidence": round(self.confidence_sum / scored, 4) if scored else None,
            "confidence_histogram": {"bin_edges": [k / HISTOGRAM_BINS for k in range(HISTOGRAM_BINS + 1)], "counts": self.histogram},
            "needs_human_share": round(self.needs_human / scored, 4) if scored else None,
        }
        if self.label_column:
            out["metrics"] = metrics(self.pairs)
            out["misclassified_rows"] = self.misclassified
            out["misclassified_total"] = self.misclassified_total
            if self.intents:
                out["per_intent"] = per_intent(self.intents)
        return out


def per_intent(counts: Counter) -> list[dict[str, Any]]:
    """Accuracy for each (expected category, intent) from counts of (category, intent, right): rows, right, accuracy."""
    keys = sorted({(category, intent) for category, intent, _ in counts})
    rows = []
    for category, intent in keys:
        right, wrong = counts[(category, intent, True)], counts[(category, intent, False)]
        accuracy = round(right / (right + wrong), 4)
        rows.append({"intent": intent, "category": category, "rows": right + wrong, "correct": right, "accuracy": accuracy})
    return rows


def _listed(row: pd.Series, index: int, text_column: str, label_column: str | None, prefix: str = "", with_compare=False) -> dict:
    item = {"row": int(index) + 1, "text": row[text_column][:300]}
    if label_column:
        item["expected"] = row[label_column]
    item.update({model.LABEL: row[prefix + model.LABEL], "confidence": float(row[prefix + "confidence"])})
    if with_compare:
        compared = {f"compare_{model.LABEL}": row[COMPARE_PREFIX + model.LABEL]}
        item.update(compared | {"compare_confidence": float(row[COMPARE_PREFIX + "confidence"])})
    return item


def metrics(pairs: Counter) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix from (expected, predicted) counts."""
    labels = [c.value for c in model.Category] + sorted({e for e, _ in pairs} - {c.value for c in model.Category})
    total = sum(pairs.values())
    per_class = {}
    for label in labels:
        tp = pairs[(label, label)]
        predicted = sum(n for (_, p), n in pairs.items() if p == label)
        support = sum(n for (e, _), n in pairs.items() if e == label)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": support}
    present = [label for label in labels if per_class[label]["support"] or any(p == label for _, p in pairs)]
    return {
        "labelled_rows": total,
        "accuracy": round(sum(pairs[(label, label)] for label in labels) / total, 4) if total else None,
        "macro_f1": round(sum(per_class[label]["f1"] for label in present) / len(present), 4) if present else None,
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_expected_columns_predicted": [[pairs[(e, p)] for p in labels] for e in labels]},
    }


# ---------------------------------------------------------------------------------------------
# Against a baseline: an earlier scored CSV of the same input
# ---------------------------------------------------------------------------------------------
def compare_baseline(scored_csv: Path, baseline_csv: str | Path, text_column: str, label_column: str | None, summary: dict) -> dict:
    """This run against an earlier scored CSV of the same input (from any earlier pipeline version), row by row:
    the rows whose category changed, split into fixed (was wrong, now right), broken (was right, now wrong) and
    changed-unlabelled, the per-class metric deltas, and which pipeline, model and data each side came from."""
    baseline_csv = Path(baseline_csv)
    try:
        before_summary = json.loads(baseline_csv.with_suffix(".json").read_text())
    except (OSError, ValueError):
        before_summary = {}
    counts, rows = Counter(), {"fixed": [], "broken": [], "changed_unlabelled": []}
    before_tally = _Tally(label_column)
    now_chunks = read_report(scored_csv, 4096)
    try:
        before_chunks = read_report(baseline_csv, 4096)
        for now, before in itertools.zip_longest(now_chunks, before_chunks):
            if now is None or before is None or len(now) != len(before) or model.LABEL not in before:
                raise BatchInputError(f"{baseline_csv.name}: not a scored report of the same input (rows or columns differ)")
            if label_column and label_column in before:
                before_tally.add(before, "", text_column)
            changed = now[(now[model.LABEL] != before[model.LABEL]) & (now.error == "") & (before.error == "")]
            for i, row in changed.iterrows():
                was, label = before[model.LABEL][i], row[label_column] if label_column else ""
                kind = _change(label, was, row[model.LABEL])
                counts[kind] += 1
                if kind in rows and len(rows[kind]) < MAX_LISTED_ROWS:
                    item = {"row": int(i) + 1, "text": row[text_column][:300], "expected": label, "before": was, "now": row[model.LABEL]}
                    rows[kind].append(item)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise BatchInputError(f"{baseline_csv.name}: cannot read the baseline ({error})") from None
    out = {
        "baseline": baseline_csv.name,
        "changed": sum(counts.values()),
        **{kind: counts[kind] for kind in ("fixed", "broken", "changed_unlabelled", "still_wrong")},
        "rows": rows,
        "sides": {
            "baseline": {k: before_summary.get(k) for k in ("pipeline_version", "model", "encoder", "data", "artifacts_built_at")},
            "now": {k: summary.get(k) for k in ("pipeline_version", "model", "encoder", "data", "artifacts_built_at")},
        },
    }
    if summary.get("metrics") and before_tally.rows:
        was, now = metrics(before_tally.pairs), summary["metrics"]
        out["metric_deltas"] = {
            "accuracy": round(now["accuracy"] - was["accuracy"], 4),
            "macro_f1": round(now["macro_f1"] - was["macro_f1"], 4),
            "per_class_f1": {c: round(m["f1"] - was["per_class"].get(c, {"f1": 0.0})["f1"], 4) for c, m in now["per_class"].items()},
        }
    return out


def _change(label: str, before: str, now: str) -> str:
    """How a row whose category changed counts: against its label when it has one."""
    if not label:
        return "changed_unlabelled"
    return "fixed" if now == label else "broken" if before == label else "still_wrong"


# ---------------------------------------------------------------------------------------------
# Shown: figures and the HTML page
# ---------------------------------------------------------------------------------------------
def _variants(summary: dict[str, Any]) -> dict[str, dict]:
    """The summaries to draw, by name: the pipeline's, or A and B when comparing."""
    return {"A (flags)": summary, "B (compare flags)": summary["compare"]} if "compare" in summary else {"pipeline": summary}


def charts(summary: dict[str, Any]) -> list[dict]:
    """The HTML page's figures as numbers that reporting/templates/report.html draws in HTML and CSS, no script: bars of the
    categories, columns of the confidence histogram and, when labelled, the confusion matrix; B beside A when comparing.
    Lengths are percentages of the largest value; a matrix cell's shade is its count over the matrix's largest."""
    variants = _variants(summary)
    counts = {c.value: [v["category_distribution"].get(c.value, 0) for v in variants.values()] for c in model.Category}
    top = max(max(row) for row in counts.values()) or 1
    bars = [{"label": c, "values": [(n, round(90 * n / top, 1)) for n in row]} for c, row in counts.items()]
    histograms = [v["confidence_histogram"]["counts"] for v in variants.values()]
    top = max(max(h) for h in histograms) or 1
    edges = summary["confidence_histogram"]["bin_edges"]
    columns = [
        {"label": f"{lo:.2f} to {hi:.2f}", "values": [(h[k], round(100 * h[k] / top, 1)) for h in histograms]}
        for k, (lo, hi) in enumerate(itertools.pairwise(edges))
    ]
    out = [
        {"kind": "bars", "title": "Category distribution", "series": list(variants), "rows": bars},
        {"kind": "columns", "title": "Confidence", "series": list(variants), "columns": columns, "top": top},
    ]
    if summary.get("metrics"):
        matrices = []
        for name, v in variants.items():
            cm = v["metrics"]["confusion_matrix"]
            cells = cm["rows_expected_columns_predicted"]
            top = max(max(row) for row in cells) or 1
            rows = [(label, [(n, round(n / top, 2)) for n in row]) for label, row in zip(cm["labels"], cells, strict=True)]
            matrices.append({"name": name, "labels": cm["labels"], "rows": rows})
        out.append({"kind": "matrix", "title": "Confusion matrix (rows: expected, columns: predicted)", "matrices": matrices})
    return out


def figures(summary: dict[str, Any]) -> list:
    """Plotly figures from a summary alone, for the app's Batch tab: categories, confidence, and the confusion matrix
    when labelled; variant B beside A when comparing. The HTML page draws the same from `charts()`."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    variants = _variants(summary)
    categories = [c.value for c in model.Category]
    bars = go.Figure(
        [go.Bar(name=n, x=categories, y=[v["category_distribution"].get(c, 0) for c in categories]) for n, v in variants.items()]
    )
    bars.update_layout(title="Category distribution", barmode="group", yaxis_title="rows")
    hist = go.Figure()
    for name, v in variants.items():
        edges = v["confidence_histogram"]["bin_edges"]
        centres = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
        hist.add_bar(name=name, x=centres, y=v["confidence_histogram"]["counts"], width=edges[1] - edges[0], opacity=0.7)
    hist.update_layout(title="Confidence", barmode="overlay", xaxis_title="confidence", yaxis_title="rows", xaxis_range=[0, 1])
    out = [bars, hist]
    if summary.get("metrics"):
        heat = make_subplots(rows=1, cols=len(variants), subplot_titles=list(variants))
        for col, v in enumerate(variants.values(), start=1):
            cm = v["metrics"]["confusion_matrix"]
            z = cm["rows_expected_columns_predicted"]
            heatmap = go.Heatmap(z=z, x=cm["labels"], y=cm["labels"], colorscale="Blues", showscale=False, text=z, texttemplate="%{text}")
            heat.add_trace(heatmap, row=1, col=col)
        heat.update_layout(title="Confusion matrix (rows: expected, columns: predicted)", height=520)
        heat.update_yaxes(autorange="reversed")
        out.append(heat)
    return out


def report_html(summary: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (reporting/templates/report.html): cards, figures drawn in HTML and CSS
    (`charts()`), tables and run metadata; no script but the sort on a column header, nothing fetched."""
    tables = []
    if summary.get("metrics"):
        per_class = [{"category": c, **m} for c, m in summary["metrics"]["per_class"].items()]
        tables.append(table("Per category", per_class, len(per_class)))
    if summary.get("per_intent"):
        tables.append(table("Per intent", summary["per_intent"], len(summary["per_intent"])))
    if "misclassified_rows" in summary:
        tables.append(table("Misclassified rows", summary["misclassified_rows"], summary["misclassified_total"]))
    if "compare" in summary:
        tables.append(table("Rows where A and B differ", summary["compare"]["differing_rows"], summary["compare"]["differing_total"]))
    if "baseline" in summary:
        changes = summary["baseline"]
        for kind, title in (("broken", "Broken since the baseline (was right, now wrong)"), ("fixed", "Fixed since the baseline")):
            tables.append(table(title, changes["rows"][kind], changes[kind]))
        tables.append(table("Changed since the baseline, no label", changes["rows"]["changed_unlabelled"], changes["changed_unlabelled"]))
    return page(
        title=Path(summary["input"]).name,
        card_groups=_summary_cards(summary),
        notes=[f"{summary['rows']} rows in {summary['elapsed_s']} s ({summary['rows_per_s']} rows/s)."],
        charts=charts(summary),
        tables=tables,
        metadata=_metadata(summary),
    )


def page(title: str, card_groups: list[dict], tables: list[dict], metadata: dict, charts: list[dict] = (), notes: list[str] = ()) -> str:
    """reporting/templates/report.html filled in, every value escaped."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.tests["unbreakable"] = _unbreakable
    return environment.get_template("report.html").render(
        title=title, card_groups=card_groups, notes=notes, charts=charts, tables=tables,
        metadata=json.dumps(metadata, indent=2, default=str),
    )  # fmt: skip


def _unbreakable(value: Any) -> bool:
    """A cell holding a word too long for a column (a URL, a long id): the page lets it wrap anywhere."""
    return isinstance(value, str) and any(len(word) > 20 for word in value.split())


def table(title: str, rows: list[dict], total: int) -> dict:
    """A table of the page: its title, the rows shown and how many there are in all."""
    return {"title": title, "rows": rows, "total": total}


def cards(title: str, items: list[tuple[str, Any]], notes: list[str] = ()) -> dict:
    """A heading and a row of summary cards (value over name) for the page, with lines of text under them."""
    return {"title": title, "cards": items, "notes": list(notes)}


_METADATA = ["input", "flags", "compare_flags", "pipeline_version", "version", "model", "encoder", "data", "artifacts_built_at"]
_METADATA += ["text_column", "label_column"]


def _metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """What the run was: input, flags, pipeline, model and data (and, with a baseline, where each side came from)."""
    out = {k: summary[k] for k in _METADATA if k in summary}
    if "baseline" in summary:
        out["baseline"] = {"file": Path(summary["baseline"]["baseline"]).name, **summary["baseline"]["sides"]}
    return out


def _summary_cards(summary: dict[str, Any]) -> list[dict]:
    def variant_cards(s: dict[str, Any], name: str, notes: list[str] = ()) -> dict:
        items = [("rows", s["rows"]), ("errors", s["errors"]), ("mean confidence", s["mean_confidence"])]
        items.append(("needs a human", f"{s['needs_human_share']:.1%}" if s["needs_human_share"] is not None else "n/a"))
        if s.get("metrics"):
            items += [("accuracy", s["metrics"]["accuracy"]), ("macro-F1", s["metrics"]["macro_f1"])]
        return cards(name, items, notes)

    out = [variant_cards(summary, "A (flags)" if "compare" in summary else "Summary")]
    if "compare" in summary:
        out.append(
            variant_cards(summary["compare"], "B (compare flags)", [f"Agreement between A and B: {summary['compare']['agreement']}"])
        )
    if "baseline" in summary:
        b = summary["baseline"]
        deltas = b.get("metric_deltas", {})
        items = [("fixed", b["fixed"]), ("broken", b["broken"]), ("changed, no label", b["changed_unlabelled"])]
        items += [(f"{k} change", f"{v:+.4f}") for k, v in deltas.items() if k != "per_class_f1"]
        out.append(cards(f"Against the baseline {Path(b['baseline']).name}", items))
    return out


# ---------------------------------------------------------------------------------------------
# The edge cases against the pipeline now (`batch.py --cases`, `snakemake regressions`)
# ---------------------------------------------------------------------------------------------
CASE_TABLES = {
    "broken": "Newly broken: fixed cases the pipeline now gets wrong",
    "newly fixed": "Newly fixed: mark them fixed",
    "open": "Still open",
}


def case_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a case (`edge_cases.check_cases`'s results): the case, its verdict, its answer when flagged and now."""
    rows = []
    for r in results:
        case, then, now = r["case"], r["case"].answer or {}, r["answer_now"]
        rows.append(
            {
                "id": case.id,
                "verdict": r["verdict"],
                "status": case.status,
                "source": case.source,
                "created_at": case.created_at,
                "text": case.ticket.text,
                **{f"expected_{k}": v for k, v in case.expected.model_dump(mode="json").items()},
                "category_when_flagged": then.get("category"),
                **{f"now_{k}": v for k, v in now.items()},
                "note": case.note,
            }
        )
    return rows


def _case_shown(row: dict[str, Any]) -> dict[str, Any]:
    """A case's row as the HTML table shows it: what it expects and what the pipeline says now, field by field."""
    expected = {k.removeprefix("expected_"): v for k, v in row.items() if k.startswith("expected_") and v is not None}
    return {
        "id": row["id"],
        "status": row["status"],
        "text": row["text"],
        "expected": ", ".join(f"{k}: {v}" for k, v in expected.items()),
        "now": ", ".join(f"{k}: {row.get(f'now_{k}')}" for k in expected),
        "confidence now": row.get("now_confidence"),
        "category when flagged": row["category_when_flagged"],
        "note": row["note"],
        "flagged": f"{row['created_at'][:16].replace('T', ' ')} ({row['source']})",  # 2026-11-26 21:10 (file)
    }


def cases_summary(rows: list[dict[str, Any]], counts: dict[str, int], store: str | Path, output_path: str | Path) -> dict[str, Any]:
    """How many cases have each verdict (`counts`, from `edge_cases.verdict_counts`), the first rows of each that
    needs a look, the store and the pipeline they were run against."""
    output_path = Path(output_path)
    manifest = builder.manifest()
    return {
        "cases": len(rows),
        **counts,
        "store": Path(store).name,
        "listed": {v: [r for r in rows if r["verdict"] == v][:MAX_LISTED_ROWS] for v in ("broken", "newly fixed", "open")},
        **{k: manifest[k] for k in ("pipeline_version", "model", "encoder", "data")},
        "version": manifest.get("version", "artifacts"),
        "outputs": {kind: output_path.with_suffix(kind).name for kind in (".csv", ".html", ".json")},
    }


def cases_html(summary: dict[str, Any], counts: dict[str, int]) -> str:
    """The edge-case report as one HTML page: the counts as cards, a table for each verdict that needs a look, one
    column a question (what was expected, what the pipeline says now) where the CSV has one a field."""
    return page(
        title="edge cases",
        card_groups=[cards("Edge cases now", list(counts.items()))],
        tables=[table(title, [_case_shown(r) for r in summary["listed"][v]], counts[v]) for v, title in CASE_TABLES.items()],
        metadata={k: summary[k] for k in ("store", "pipeline_version", "model", "encoder", "data")},
    )

"""The drill's Markdown page: the verdict first, then what it rests on.

RTO, RPO, detection, what was lost and what reconciliation brought back, each invariant, the timeline; for an
``all`` run one summary table and then a section per scenario. Every key of the report may be missing: the
page says what is not there rather than failing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tandem.drill.values import DASH, as_dict, as_float, as_list, cell, clock_scale, num, rpo, scenarios_of, secs

LISTED = 50  # rows of ids/reasons per table in the page; the counts are always complete


def write_markdown(report: dict[str, Any], path: Path, png: Path | None) -> Path:
    """The page a person reads: verdict first, then the numbers it rests on. ``png`` is linked relative to the
    page (the two are moved together); for ``all`` each scenario's PNG comes from its ``artifacts``."""
    path = Path(path)
    scenarios = scenarios_of(report)
    lines = _single_page(report, _link(png, path)) if scenarios is None else _all_page(report, scenarios, path)
    _write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _single_page(report: dict[str, Any], png_link: str | None) -> list[str]:
    name = str(report.get("scenario") or "unknown scenario")
    lines = [f"# {_verdict(report)} {DASH} drill `{name}`", ""]
    lines += _verdict_line(report)
    lines += _scenario_body(report, png_link, level=2)
    return lines


def _all_page(report: dict[str, Any], scenarios: dict[str, Any], md_path: Path) -> list[str]:
    subs = {name: sub for name, sub in scenarios.items() if isinstance(sub, dict)}
    passed = sum(1 for sub in subs.values() if sub.get("passed") is True)
    lines = [f"# {_verdict(report)} {DASH} drill `all`", ""]
    lines += [f"**{passed} of {len(subs)} scenarios passed**; the whole run took {secs(report.get('wall_seconds'))}"
              " real seconds.", ""]  # fmt: skip
    if "error" in report:
        lines += [_error_lines(report), ""]
    lines += ["| scenario | verdict | detection (s) | RTO (s) | RPO | lost before → after reconcile | wall (s) |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, sub in subs.items():
        f, r = as_dict(sub.get("failover")), as_dict(sub.get("result"))
        lines.append(_row([
            f"[{name}](#{_anchor(name)})", _verdict(sub), secs(f.get("detection_seconds")),
            secs(f.get("rto_seconds")), rpo(f),
            f"{num(r.get('lost_before_reconcile'))} → {num(r.get('lost_after_reconcile'))}",
            secs(sub.get("wall_seconds")),
        ]))  # fmt: skip
    lines.append("")
    lines.append("Seconds are emulated AWS seconds (each scenario's clock scale is stated in its section); "
                 "wall seconds are real.")  # fmt: skip
    lines.append("")
    for name, sub in subs.items():
        png = as_dict(sub.get("artifacts")).get("timeline_png")
        lines += [f"## {name}", ""]
        lines += _verdict_line(sub)
        lines += _scenario_body(sub, _link(Path(png), md_path) if png else None, level=3)
    return lines


def _verdict(report: dict[str, Any]) -> str:
    return "✅ PASSED" if report.get("passed") is True else "❌ FAILED"


def _verdict_line(report: dict[str, Any]) -> list[str]:
    invariants = as_dict(report.get("invariants"))
    failed = [name for name, ok in invariants.items() if ok is not True]
    if report.get("passed") is True:
        text = f"> **PASSED**: all {len(invariants)} invariants hold."
    elif failed:
        text = f"> **FAILED**: {len(failed)} of {len(invariants)} invariants do not hold: " + ", ".join(
            f"`{name}`" for name in failed
        )
    else:
        text = "> **FAILED**"
    lines = [text, ""]
    if "error" in report:
        lines += [_error_lines(report), ""]
    return lines


def _error_lines(report: dict[str, Any]) -> str:
    error = report.get("error")
    if isinstance(error, dict):
        return f"The drill could not run ({cell(error.get('stage'))}): {cell(error.get('message'))}"
    return f"The drill could not run: {cell(error)}"


def _scenario_body(report: dict[str, Any], png_link: str | None, level: int) -> list[str]:
    h = "#" * level
    lines = [_clock_sentence(report), ""]
    if png_link:
        lines += [f"![timeline of the drill]({png_link})", "", f"Timeline picture: [{png_link}]({png_link})", ""]
    lines += [f"{h} Recovery", "", *_recovery(report)]
    lines += [f"{h} Data lost and reconciled", "", *_reconciliation(report)]
    lines += [f"{h} Workload", "", *_workload(report)]
    lines += [f"{h} Invariants", "", *_invariants(report)]
    lines += [f"{h} Timeline", "", *_timeline(report)]
    if report.get("notes"):
        lines += [f"{h} Notes", "", *[f"- {cell(note)}" for note in report["notes"]], ""]
    return lines


def _clock_sentence(report: dict[str, Any]) -> str:
    scale = clock_scale(report)
    twin = as_dict(report.get("twin"))
    where = f" Twin region {cell(twin['region'])}." if twin.get("region") else ""
    wall = f" The drill took {secs(report.get('wall_seconds'))} real seconds." if as_float(
        report.get("wall_seconds")
    ) is not None else ""  # fmt: skip
    if scale is None:
        return f"Seconds are emulated AWS seconds (the twin's clock scale was not recorded).{where}{wall}"
    return (f"Seconds are emulated AWS seconds; the twin ran at x{scale:g} (one real second is {scale:g} emulated "
            f"seconds).{where}{wall}")  # fmt: skip


def _recovery(report: dict[str, Any]) -> list[str]:
    if not isinstance(report.get("failover"), dict):
        return ["No failover in this scenario.", ""]
    f = report["failover"]
    outcome = " ".join(str(v) for v in (f.get("outcome"), f"({f['mode']})" if f.get("mode") else None) if v)
    lines = ["| measure | value |", "|---|---|"]
    lines.append(_row(["**detection** (outage → failover decision)", secs(f.get("detection_seconds"), "s")]))
    lines.append(_row(["**RTO** (outage → first accepted commit by DR)", secs(f.get("rto_seconds"), "s")]))
    lines.append(_row(["**RPO** (what DR lacked at promotion)", rpo(f)]))
    if f.get("rpo_estimate_seconds") is not None:
        lines.append(_row(["RPO estimate from replication lag", secs(f.get("rpo_estimate_seconds"), "s")]))
    lines.append(_row(["executions", num(f.get("executions"))]))
    lines.append(_row(["outcome", outcome or DASH]))
    if f.get("expected"):
        lines.append(_row(["expected", f["expected"]]))
    lines.append("")
    reasons = f.get("reasons")
    if isinstance(reasons, list) and reasons:
        lines += ["Reasons given:", ""] + [f"- {cell(reason)}" for reason in reasons] + [""]
    return lines


def _reconciliation(report: dict[str, Any]) -> list[str]:
    r = as_dict(report.get("result"))
    lines = [
        f"- lost before reconciliation: **{num(r.get('lost_before_reconcile'))}**",
        f"- brought back by reconciliation: **{num(r.get('reconciled'))}**",
        f"- lost after reconciliation: **{num(r.get('lost_after_reconcile'))}**",
        f"- lost (overall, by the audit): **{num(r.get('lost'))}**",
    ]
    lost_ids = r.get("lost_ids")
    if isinstance(lost_ids, list) and lost_ids:
        lines.append(f"- lost ids: {_ids(lost_ids)}")
    lines.append("")
    rec = as_dict(as_dict(report.get("failover")).get("reconcile"))
    if not rec:
        return [*lines, "No reconciliation ran.", ""]
    waited = rec.get("waited_for")
    if isinstance(waited, list) and waited:
        lines += [f"It waited {num(rec.get('waited_seconds'))} s ({num(rec.get('runs'))} runs) for: "
                  + "; ".join(str(w) for w in waited) + ".", ""]  # fmt: skip
    lines += ["Reconciliation, part by part:", "", "| part | brought back | left / could not |", "|---|---|---|"]
    left: list[tuple[str, str, str]] = []  # (part, id, reason)
    stranded = as_dict(rec.get("stranded"))
    if stranded:
        moved = _first(stranded, "moved", "forwarded")
        lines.append(_row(["stranded messages (old region's queue)", f"{num(moved)} moved",
                           f"{num(stranded.get('refused'))} refused" if "refused" in stranded else DASH]))  # fmt: skip
        left += _errors("stranded", stranded)
    for region, dlq in as_dict(rec.get("dlq")).items():
        dlq = as_dict(dlq)
        kept = dlq.get("left")
        kept_count = len(kept) if isinstance(kept, list) else as_float(dlq.get("kept"))
        lines.append(_row([f"DLQ {region}", f"{num(dlq.get('redriven'))} redriven", f"{num(kept_count)} left"]))
        if isinstance(kept, list):
            left += [(f"DLQ {region}", _id_of(item), _reason_of(item)) for item in kept]
        reasons = dlq.get("reasons")
        if isinstance(reasons, dict):
            left += [(f"DLQ {region}", f"{num(count)} message(s)", str(why)) for why, count in reasons.items()]
        left += _errors(f"DLQ {region}", dlq)
    journal = as_dict(rec.get("journal"))
    if journal:
        ids = journal.get("reapplied_ids")
        reapplied = journal.get("reapplied")
        count = as_float(reapplied)
        if count is None and isinstance(ids, list):
            count = len(ids)
        failed = journal.get("could_not") if isinstance(journal.get("could_not"), list) else journal.get("failed")
        failed = failed if isinstance(failed, list) else []
        held = f", {num(journal.get('already_held'))} held already" if "already_held" in journal else ""
        missing = f" of {num(journal.get('missing'))} missing" if "missing" in journal else ""
        lines.append(_row(["journal replay", f"{num(count)} re-applied{missing}{held}", f"{len(failed)} could not"]))
        left += [("journal", _id_of(item), _reason_of(item)) for item in failed]
        left += _errors("journal", journal)
    lines.append("")
    if isinstance(ids := journal.get("reapplied_ids"), list) and ids:
        lines += [f"Re-applied from the journal: {_ids(ids)}", ""]
    complete = rec.get("complete")
    if complete is not None:
        lines += [f"Reconciliation complete: **{'yes' if complete else 'no'}**", ""]
    if left:
        lines += ["What reconciliation could not bring back, and why:", "", "| part | id | reason |", "|---|---|---|"]
        lines += [_row(list(entry)) for entry in left[:LISTED]]
        if len(left) > LISTED:
            lines.append(f"| … | {len(left) - LISTED} more | |")
        lines.append("")
    return lines


def _workload(report: dict[str, Any]) -> list[str]:
    w, r, p = as_dict(report.get("workload")), as_dict(report.get("result")), as_dict(report.get("producers"))
    lines = ["| sent | valid | poison | duplicates | accepted |", "|---|---|---|---|---|",
             _row([num(w.get(k)) for k in ("sent", "valid", "poison", "duplicates", "accepted")]), "",
             "| committed | duplicates applied | rejected (DLQ) | lost |", "|---|---|---|---|",
             _row([num(r.get(k)) for k in ("committed", "duplicates_applied", "rejected", "lost")]), ""]  # fmt: skip
    if p:
        by_region = as_dict(p.get("accepted_by_region"))
        accepted = ", ".join(f"{region} {num(n)}" for region, n in by_region.items()) or DASH
        gave_up, failed = num(p.get("gave_up")), num(p.get("failed_attempts"))
        lines += [f"Producers: {num(p.get('count'))}; accepted per region: {accepted}; gave up {gave_up}; "
                  f"failed attempts (retried) {failed}.", ""]  # fmt: skip
    return lines


def _invariants(report: dict[str, Any]) -> list[str]:
    invariants = as_dict(report.get("invariants"))
    if not invariants:
        return ["No invariants were checked.", ""]
    lines = []
    for name, ok in invariants.items():
        if ok is True:
            lines.append(f"- [x] ✅ `{name}`")
        elif ok is None:
            lines.append(f"- [ ] ❔ `{name}` {DASH} not checked")
        else:
            lines.append(f"- [ ] ❌ `{name}` {DASH} **failed**")
    return [*lines, ""]


def _timeline(report: dict[str, Any]) -> list[str]:
    events = [e for e in as_list(as_dict(report.get("failover")).get("timeline")) if isinstance(e, dict)]
    if not events:
        return ["No timeline was recorded.", ""]
    zero = as_dict(report.get("series")).get("zero_label")
    lines = [
        f"Emulated seconds from {cell(zero)}." if zero else "Emulated seconds.",
        "",
        "| event | emulated second | started at |",
        "|---|---|---|",
    ]
    lines += [_row([e.get("event"), secs(e.get("at")), secs(e.get("started"))]) for e in events]
    return [*lines, ""]


def _errors(part: str, d: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(part, DASH, str(e)) for e in as_list(d.get("errors"))]


def _id_of(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("transaction_id") or item.get("message_id") or DASH)
    return str(item)


def _reason_of(item: Any) -> str:
    return str(item.get("reason") or DASH) if isinstance(item, dict) else DASH


def _ids(ids: Sequence[Any]) -> str:
    shown = ", ".join(f"`{cell(i)}`" for i in ids[:LISTED])
    return shown + (f" and {len(ids) - LISTED} more" if len(ids) > LISTED else "")


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading (lower case, punctuation but - and _ dropped, spaces as -)."""
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _link(png: Path | None, md_path: Path) -> str | None:
    if png is None:
        return None
    try:
        rel = os.path.relpath(Path(png).resolve(), Path(md_path).resolve().parent)
    except ValueError:  # another drive (Windows): the absolute path still works
        rel = str(png)
    return Path(rel).as_posix()


def _first(d: dict[str, Any], *keys: str) -> Any:
    return next((d[k] for k in keys if d.get(k) is not None), None)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)

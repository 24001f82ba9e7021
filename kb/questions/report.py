"""What `kb questions` prints: the run's report per source, and questions for `list`."""

from __future__ import annotations

from ..terminal import printable
from .types import KIND_NAMES, REASONS, Question, RunReport


def format_report(report: RunReport) -> str:
    data = report.to_dict()
    lines = [f"{'source':<44} {'made':>5} {'kept':>5}  rejected"]
    for source, row in report.by_source.items():
        why = ", ".join(f"{reason} {n}" for reason, n in sorted(row["rejected"].items(), key=lambda p: -p[1]))
        lines.append(f"{printable(source)[:44]:<44} {row['made']:>5} {row['kept']:>5}  {why}")
    lines.append("")
    share = f"{data['share_kept']:.0%}"
    per = f"; {data['seconds_per_kept']} s per kept question" if data["seconds_per_kept"] else ""
    lines.append(f"Made {report.made}, kept {report.kept} ({share}) in {data['seconds']} s{per}.")
    kinds = ", ".join(f"{KIND_NAMES[k]} {v['kept']}/{v['made']}" for k, v in report.by_kind.items())
    if kinds:
        lines.append(f"Kept by kind: {kinds}.")
    for reason, n in sorted(report.rejected.items(), key=lambda p: -p[1]):
        lines.append(f"  rejected {n}: {REASONS.get(reason, reason)} ({reason})")
    if report.baselines:
        b = report.baselines
        positions = ", ".join(f"{k[-1]} {b[k]:.0%}" for k in b if k.startswith("always_"))
        lines.append(
            f"Multiple choice ({b['questions']}): longest option right {b['longest_option']:.0%}; "
            f"always the same letter right: {positions}."
        )
    lines.append("Review them with `kb questions list DB --status draft`, then `kb questions approve DB ID…`.")
    return "\n".join(lines)


def format_question(q: Question) -> str:
    head = f"#{q.id} [{q.status}{': ' + q.reason if q.reason else ''}] {KIND_NAMES[q.kind]} · {q.locator}"
    lines = [head, f"  Q: {q.question}"]
    if q.kind == "mcq":
        lines += [f"  {'*' if i == q.correct else ' '} {'ABCD'[i]}. {o}" for i, o in enumerate(q.options)]
    else:
        lines.append(f"  A: {q.answer}")
    lines.append(f'  quote: "{q.quote}"')
    return printable("\n".join(lines))

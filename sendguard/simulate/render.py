"""A replay report for people: a terminal table, or a self-contained HTML page."""

from __future__ import annotations

import jinja2

from sendguard.simulate.report import Report, describe

# The page is one file with its style inline, so it can be mailed or attached as it is.
_PAGE = jinja2.Environment(
    loader=jinja2.PackageLoader("sendguard.simulate", "."), autoescape=True
).get_template("report.html")


def html(report: Report) -> str:
    """A self-contained page (no external assets), every value escaped."""
    return _PAGE.render(r=report.to_json())


def text(report: Report) -> str:
    """The report as lines for a terminal."""
    lines = [
        f"{len(report.replayed)} deliveries replayed; {len(report.changed)} decided differently"
    ]
    for group in report.policies():
        lines.append(f"\n{group['policy']} would {group['verdict']}: {group['count']} deliveries")
        lines.extend(f"  {e['summary']}" for e in group["examples"])
    lost = report.lost_engagement()
    if lost:
        lines.append("\nwould have been dropped, but was opened or clicked:")
        lines.extend(f"  {describe(r)}" for r in lost)
    for attribute, title in (("recipient", "recipients"), ("campaign", "campaigns")):
        most = report.most(attribute)
        if most:
            people = ", ".join(f"{m[attribute]} ({m['count']})" for m in most)
            lines.append(f"\n{title} most affected: {people}")
    return "\n".join(lines)

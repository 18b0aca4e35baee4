"""The paper-versus-run table every reproduction prints: one row per claim.

A row says what the paper claims for a setting, what this run found and whether they agree
(``yes``, ``no``, or ``see plot`` where no single number decides).
"""

from __future__ import annotations

_AGREES = {True: "yes", False: "no", None: "see plot"}


def claim(setting: str, paper: str, found: str, agrees: bool | None) -> dict[str, str]:
    """One row of the table."""
    return {"setting": setting, "paper": paper, "found": found, "agrees": _AGREES[agrees]}


def print_claims(title: str, rows: list[dict[str, str]]) -> None:
    """Print the rows under ``title``, the paper's words above this run's."""
    w0 = max(len(r["setting"]) for r in rows)
    print(f"\n{title}: what the paper says vs what this run found")
    for r in rows:
        print(f"  {r['setting']:<{w0}}  paper: {r['paper']}")
        print(f"  {'':<{w0}}  found: {r['found']}   [{r['agrees']}]")

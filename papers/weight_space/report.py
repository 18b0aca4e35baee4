"""The weight-space report: the verdict against the paper's claim, the table and the plot."""

from __future__ import annotations

CLAIM = (
    "on predicting the exact task, probing (functionalist) encoders clearly beat the mechanistic ones; "
    "interactive probing is best on formal languages"
)


def verdict(scores: dict, kind: str, encoders: list[str]) -> dict:
    """Does the exact-task table show the paper's claim? Per split, with the numbers compared."""
    from papers.weight_space.encoders import FUNCTIONALIST, MECHANISTIC

    out = {}
    table = scores["task"]
    for split in ("id", "ood"):
        probing = {e: table[e][split] for e in encoders if e in FUNCTIONALIST and split in table[e]}
        mech = {e: table[e][split] for e in encoders if e in MECHANISTIC and split in table[e]}
        if not probing or not mech:
            continue
        best_mech = max(mech.values())
        entry = {
            "best_probing": max(probing, key=probing.get),
            "best_probing_score": max(probing.values()),
            "best_mechanistic": max(mech, key=mech.get),
            "best_mechanistic_score": best_mech,
            "every_probing_beats_every_mechanistic": min(probing.values()) > best_mech,
            "best_probing_beats_best_mechanistic": max(probing.values()) > best_mech,
            "chance": table["chance"].get(split),
            "any_above_chance": max(*probing.values(), best_mech) > table["chance"].get(split, 0.0),
        }
        if kind == "formal-languages" and "interactive" in probing:
            others = [v for e, v in {**probing, **mech}.items() if e != "interactive"]
            entry["interactive_is_best"] = probing["interactive"] > max(others, default=float("-inf"))
        out[split] = entry
    return out


def format_table(zoo_name: str, block: dict) -> str:
    d = block["downstream"]
    n = d["n_used"]
    lines = [
        "",
        f"== {zoo_name}: {block['zoo']}",
        f"   splits (members): encoder training {block['splits']['train']}, "
        f"downstream train {n['step']['train']}, ID {n['step']['id']}, OOD {n['step']['ood']}; "
        "exact task uses members with return >= min_return "
        f"({n['task']['train']} / {n['task']['id']} / {n['task']['ood']})",
        f"{'encoder':<26} {'family':<13} {'emul TV':>8} | {'task ID':>7} {'task OOD':>8} | "
        f"{'step ID':>7} {'step OOD':>8} | {'ret R2 ID':>9} {'ret R2 OOD':>10}",
    ]

    def num(v, w):
        return f"{v:>{w}.3f}" if isinstance(v, float) else f"{'-':>{w}}"

    heads = any("id_heads" in v for v in d["task"].values())
    if heads:
        lines[-1] += f" | {'offsets ID':>10} {'offsets OOD':>11}"
    for name in [*block["encoders"], *[n for n in d["task"] if n.endswith("(untrained)")], "chance"]:
        info = block["encoders"].get(name, {})
        fam = info.get("family", "")
        tv = info.get("emulation_tv", {}).get("val")
        task = d["task"][name]
        line = (
            f"{name:<26} {fam:<13} {num(tv, 8)} | {num(task.get('id'), 7)} {num(task.get('ood'), 8)} | "
            f"{num(d['step'][name].get('id'), 7)} {num(d['step'][name].get('ood'), 8)} | "
            f"{num(d['return'][name].get('id'), 9)} {num(d['return'][name].get('ood'), 10)}"
        )
        if heads:
            line += f" | {num(task.get('id_heads'), 10)} {num(task.get('ood_heads'), 11)}"
        lines.append(line)
    lines.append(
        "(emul TV: total variation of the emulation on validation members; task: exact-task accuracy"
        + ("; offsets: mean accuracy per offset d2, d3, d4" if heads else "")
        + "; step: snapshot accuracy; "
        "ret R2: R² of the return)"
    )
    lines.append(f"paper's claim: {CLAIM}")
    for split, v in block["verdict"].items():
        found = (
            f"best probing {v['best_probing']} {v['best_probing_score']:.3f} vs best mechanistic "
            f"{v['best_mechanistic']} {v['best_mechanistic_score']:.3f}: "
            + (
                "every probing encoder beats every mechanistic one"
                if v["every_probing_beats_every_mechanistic"]
                else "the best probing encoder beats the best mechanistic one"
                if v["best_probing_beats_best_mechanistic"]
                else "probing does NOT beat mechanistic"
            )
        )
        if "interactive_is_best" in v:
            found += "; interactive is " + ("the best" if v["interactive_is_best"] else "NOT the best")
        if not v["any_above_chance"]:
            found += f" (no encoder above chance {v['chance']:.3f}: the claim is not testable at this scale)"
        lines.append(f"  found (exact task, {split.upper()}): {found}")
    return "\n".join(lines)


def plot(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    zoos = list(results["zoos"])
    panels = [
        ("task", "", "exact task (accuracy)"),
        ("task", "_heads", "each offset d2, d3, d4 (accuracy)"),
        ("step", "", "training snapshot (accuracy)"),
        ("return", "", "return (R²)"),
    ]
    fig, axes = plt.subplots(
        len(zoos), len(panels), figsize=(5.5 * len(panels), 4 * len(zoos)), squeeze=False
    )
    for i, z in enumerate(zoos):
        block = results["zoos"][z]
        table_task = block["downstream"]["task"]
        trained = list(block["encoders"])
        names = trained + [n for n in table_task if n.endswith("(untrained)")] + ["chance"]
        for j, (target, suffix, title) in enumerate(panels):
            ax = axes[i][j]
            table = block["downstream"][target]
            if not any(f"id{suffix}" in table[n] for n in names):
                ax.axis("off")
                continue
            x = np.arange(len(names))
            for k, split in enumerate(("id", "ood")):
                vals = [table[n].get(split + suffix, np.nan) for n in names]
                bars = ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=split.upper(), color=f"C{k}")
                for bar, n in zip(bars, names):  # untrained controls and chance drawn lighter
                    if n not in trained:
                        bar.set_alpha(0.4)
            ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{z}: {title}", fontsize=10)
            if target == "return":
                ax.set_ylim(bottom=max(-1.0, ax.get_ylim()[0]))
            ax.axhline(0, color="k", lw=0.5)
            if j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

"""PNG figures of the statistics, drawn from the ``stats.json`` dictionary alone.

One figure per statistic: weight change by layer, activation statistics by layer
(overall and per role), KL by role and by offset from the assistant turn, and the
ADL's promoted / suppressed tokens. Uses matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path

from diffing.plotting import pyplot, save_figure


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def weights_figure(result: dict, path: Path) -> None:
    """Bar chart: relative Frobenius change of each decoder block."""
    plt = pyplot()
    rows = result["weights"]["layers"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar([r["layer"] for r in rows], [r["relative_change"] for r in rows], color="#4c72b0")
    _integer_ticks(ax)
    ax.set_xlabel("layer")
    ax.set_ylabel("||ΔW||_F / ||W_b||_F (changed tensors)")
    ax.set_title("weight change by layer")
    save_figure(fig, path)


def activations_figure(result: dict, path: Path) -> None:
    """Three panels by layer: mean-difference norm, cosine, relative norm change; one line per role."""
    plt = pyplot()
    rows = result["activations"]["layers"]
    keys = ("mean_diff_norm", "cosine", "relative_norm_change")
    roles = sorted({r for row in rows for r in row["by_role"]})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key in zip(axes, keys):
        xs = [row["layer"] for row in rows if key in row]
        ax.plot(xs, [row[key] for row in rows if key in row], "k-o", label="all", lw=2)
        for role in roles:
            pts = [
                (row["layer"], row["by_role"][role][key]) for row in rows if role in row["by_role"]
            ]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", marker=".", label=role)
        _integer_ticks(ax)
        ax.set_xlabel("layer")
        ax.set_title(key)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def kl_figure(result: dict, path: Path) -> None:
    """Left: mean KL by role (text vs chat data). Right: mean KL by offset from the assistant turn's start."""
    plt = pyplot()
    kl = result["kl"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
    labels, values = [], []
    for kind in ("text", "chat"):
        for role, q in kl.get(kind, {}).get("by_role", {}).items():
            labels.append(f"{kind}:{role}")
            values.append(q["mean"])
    ax1.bar(range(len(values)), values, color="#dd8452")
    ax1.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("mean KL(p_f || p_b)")
    ax1.set_title("KL by data kind and token role")
    offs = kl.get("by_assistant_offset", [])
    ax2.plot([o["offset"] for o in offs], [o["mean"] for o in offs], "-o", ms=3)
    ax2.axvline(0, color="grey", lw=0.8)
    ax2.set_xlabel("position relative to the first assistant token")
    ax2.set_ylabel("mean KL")
    ax2.set_title("KL along the chat template")
    save_figure(fig, path)


def adl_figure(result: dict, path: Path, n: int = 15) -> None:
    """Horizontal bars: the ADL's top promoted and suppressed tokens with their logit-lens scores."""
    plt = pyplot()
    adl = result["adl"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.25 * n + 1.5))
    for ax, key, color in (
        (axes[0], "promoted_tokens", "#55a868"),
        (axes[1], "suppressed_tokens", "#c44e52"),
    ):
        rows = adl[key][:n][::-1]
        ax.barh(range(len(rows)), [r["score"] for r in rows], color=color)
        ax.set_yticks(range(len(rows)), [repr(r["token"]) for r in rows], fontsize=7)
        ax.set_title(f"{key.split('_')[0]} (layer {adl['layer']})")
    save_figure(fig, path)


def write_figures(result: dict, out_dir: Path) -> dict[str, str]:
    """Draw every figure whose section is present; returns ``{name: file name}``."""
    out = {}
    for name, fn, needed in (
        ("weights", weights_figure, "weights"),
        ("activations", activations_figure, "activations"),
        ("kl", kl_figure, "kl"),
        ("adl", adl_figure, "adl"),
    ):
        if needed in result:
            fname = f"{name}.png"
            fn(result, out_dir / fname)
            out[name] = fname
    return out

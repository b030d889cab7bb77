"""PNG figures of the lens methods, drawn from ``pca.json`` / ``mining.json`` alone (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from diffing.plotting import pyplot, save_figure


def explained_variance_figure(data: dict, path: Path) -> None:
    """Bars per layer: explained variance ratio of each centred component, with the uncentred
    direction's share of ``E[||delta||^2]`` and the mean's share as reference lines."""
    plt = pyplot()
    layers = data["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers) + 0.6, 3.2), squeeze=False)
    for ax, lay in zip(axes[0], layers):
        ratios = lay["explained_variance_ratio"]
        ax.bar(range(1, len(ratios) + 1), ratios, color="#4c72b0", label="centred PC")
        ax.axhline(lay["uncentred_first_ratio"], color="#dd8452", ls="--", label="uncentred 1st")
        ax.axhline(lay["mean_share"], color="#55a868", ls=":", label="mean (ADL) share")
        ax.set_xticks(range(1, len(ratios) + 1))
        ax.set_xlabel("component")
        ax.set_ylim(0, 1)
        ax.set_title(f"layer {lay['layer']}")
    axes[0][0].set_ylabel("explained variance ratio")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def role_projection_figure(data: dict, path: Path) -> None:
    """Grouped bars per layer: mean |projection| of each direction on each token role."""
    plt = pyplot()
    layers = data["layers"]
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers) + 0.6, 3.2), squeeze=False)
    for ax, lay in zip(axes[0], layers):
        dirs = lay["directions"]
        roles = sorted({r for d in dirs for r in d["by_role"]})
        width = 0.8 / max(len(roles), 1)
        for i, role in enumerate(roles):
            vals = [d["by_role"].get(role, {}).get("abs_mean", 0.0) for d in dirs]
            ax.bar([j + i * width for j in range(len(dirs))], vals, width, label=role)
        ax.set_xticks(
            [j + 0.4 - width / 2 for j in range(len(dirs))], [d["name"] for d in dirs], fontsize=8
        )
        ax.set_title(f"layer {lay['layer']}: mean |projection| by role")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def mining_figure(data: dict, path: Path, n: int = 20) -> None:
    """Horizontal bars: the top mined tokens' top-k counts, annotated with their mean raise (nats)."""
    plt = pyplot()
    rows = data["top_tokens"][:n][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * max(len(rows), 1) + 1.4))
    ax.barh(range(len(rows)), [r["count"] for r in rows], color="#55a868")
    ax.set_yticks(range(len(rows)), [repr(r["token"]) for r in rows], fontsize=7)
    for i, r in enumerate(rows):
        ax.text(r["count"], i, f" {r['mean_diff']:.2f}", va="center", fontsize=6)
    k = data["config"]["k"]
    ax.set_xlabel(f"positions with the token in the top {k} of log p_ft - log p_base")
    ax.set_title("tokens the fine-tune raises most (label: mean raise, nats)")
    save_figure(fig, path)


def pca_figures(data: dict, out_dir: Path) -> dict[str, str]:
    """Draw the PCA figures into ``out_dir``; returns ``{name: file name}``."""
    explained_variance_figure(data, out_dir / "pca_explained_variance.png")
    role_projection_figure(data, out_dir / "pca_roles.png")
    return {"explained_variance": "pca_explained_variance.png", "roles": "pca_roles.png"}


def mining_figures(data: dict, out_dir: Path) -> dict[str, str]:
    """Draw the mining figure into ``out_dir``; returns ``{name: file name}``."""
    mining_figure(data, out_dir / "mining_top_tokens.png")
    return {"top_tokens": "mining_top_tokens.png"}

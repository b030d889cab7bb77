"""``diffing lens ...``: corpus-level lenses on a pair (activation-difference PCA, diff mining).

``register`` builds the ``lens`` group; each action is one ``add_<action>(actions)`` function
listed in :data:`ACTIONS`, so another action slots in with a function and one line there.
"""

from __future__ import annotations

import argparse
import sys

from diffing.cli.common import add_out_arg, add_pair_args
from diffing.cli.options import add_options, config_from_args
from diffing.lens.config import LensDataConfig, MiningConfig, PCAConfig


def _add_data_args(p: argparse.ArgumentParser, name: str) -> None:
    """``--data SPEC`` (repeatable) and ``--out DIR``, shared by every lens action."""
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        required=True,
        metavar="SPEC",
        help="data, repeatable: .txt (one document a line), .jsonl/.json/.parquet with text or chat "
        '({"messages": [...]}) records, a folder of them, hf:NAME[:split] or organism:text / organism:chat',
    )
    add_out_arg(p, f"lens {name}", "output folder")


def add_pca(actions) -> argparse.ArgumentParser:
    """Add ``lens pca``."""
    p = actions.add_parser(
        "pca",
        help="principal components of x_ft - x_base per layer, read through the logit lens",
        description="Trace both models on the same tokens, decompose the activation differences per "
        "layer (uncentred first direction and centred principal components, float64 streaming "
        "covariance), and read each direction through the fine-tuned model's logit lens (both signs), "
        "its top and bottom contexts and its projection by token role. Writes pca.json, "
        "pca.safetensors and PNG figures into --out (docs/lens.md).",
    )
    add_pair_args(p)
    _add_data_args(p, "pca")
    add_options(p, PCAConfig, title="PCA")
    p.set_defaults(handler=run_pca)
    return p


def add_mine(actions) -> argparse.ArgumentParser:
    """Add ``lens mine``."""
    p = actions.add_parser(
        "mine",
        help="tokens whose log-probability the fine-tune raises most, aggregated and NMF-clustered",
        description="At every position, the top-k tokens of log p_ft - log p_base; aggregated over the "
        "corpus (count and mean raise per token), the top tokens ranked, and NMF clusters of the "
        "positions where they rise. Writes mining.json and a PNG figure into --out (docs/lens.md).",
    )
    add_pair_args(p)
    _add_data_args(p, "mine")
    add_options(p, MiningConfig, title="mining")
    p.set_defaults(handler=run_mine)
    return p


ACTIONS = (add_pca, add_mine)
"""The group's actions, in ``--help`` order: one ``add_<action>(actions)`` each."""


def register(sub) -> None:
    """Add the ``lens`` command group and its actions."""
    p = sub.add_parser("lens", help="corpus-level lenses: activation-difference PCA, diff mining")
    actions = p.add_subparsers(dest="lens_command", metavar="ACTION")
    for add in ACTIONS:
        add(actions)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _run(args: argparse.Namespace, config_cls: type, method, save):
    """Run one lens from the flags: ``(result, JSON path)``.

    The config from the flags, the pair and the ``(texts, chats)`` of ``--data`` read
    within the token budget, ``method`` with a progress line, then ``save`` into ``--out``.
    """
    from diffing.cli.common import load_pair_from_args
    from diffing.lens.data import read_specs
    from diffing.lens.output import pair_info

    cfg: LensDataConfig = config_from_args(args, config_cls)
    texts, chats = read_specs(args.data, cfg.tokens, cfg.max_length)
    pair = load_pair_from_args(args)
    res = method(pair, texts=texts, chats=chats, config=cfg, progress=_progress)
    print(file=sys.stderr)  # end the progress line
    return res, save(res, args.out, pair_info=pair_info(pair))


def _progress(line: str) -> None:
    print(f"\r{line}", end="", file=sys.stderr, flush=True)


def run_pca(args: argparse.Namespace) -> int:
    """Handler of ``diffing lens pca``."""
    from diffing.lens.output import save_pca
    from diffing.lens.pca import diff_pca

    res, path = _run(args, PCAConfig, diff_pca, save_pca)
    print(f"{res.positions} positions of {res.documents} documents")
    for lay in res.layers:
        ratios = " ".join(f"{r:.3f}" for r in lay.decomposition.variance_ratio.tolist())
        print(
            f"layer {lay.layer}: mean share {lay.decomposition.mean_share:.3f}; explained variance {ratios}"
        )
        for d in lay.directions[:2]:
            plus = ", ".join(repr(t["token"]) for t in d.promoted[:6])
            minus = ", ".join(repr(t["token"]) for t in d.promoted_negative[:6])
            print(f"  {d.name} ({d.explained:.3f}): + {plus} | - {minus}")
    print(f"wrote {path} and figures")
    return 0


def run_mine(args: argparse.Namespace) -> int:
    """Handler of ``diffing lens mine``."""
    from diffing.lens.mining import diff_mining
    from diffing.lens.output import save_mining

    res, path = _run(args, MiningConfig, diff_mining, save_mining)
    print(
        f"{res.positions} positions of {res.documents} documents; top raised tokens (count, mean nats):"
    )
    for t in res.top_tokens[:10]:
        print(f"  {t['token']!r:>16} {t['count']:>7} {t['mean_diff']:.3f}")
    for i, c in enumerate(res.clusters):
        print(
            f"  cluster {i + 1} ({c['positions']} positions): "
            + ", ".join(repr(t["token"]) for t in c["tokens"][:6])
        )
    print(f"wrote {path} and figure")
    return 0

"""What a model says and first predicts on each prompt set under each intervention run.

Measuring refusal, evaluating a direction and comparing base and fine-tuned directions
all ask the same two questions of every (prompt set, intervention run) cell: the
greedy completions (read for the refusal phrase) and the log-probabilities of the
first response token (read for the refusal tokens and KL). Both use the generation
settings of one :class:`~diffing.refusal.config.RefusalConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from diffing.arch import ArchSpec
from diffing.refusal.candidates import encode_prompts, run_prompts
from diffing.refusal.config import RefusalConfig
from diffing.refusal.interventions import Intervention, complete

PLAIN = {"plain": ()}
"""A single run without interventions."""


def completions_by_run(
    lm,
    tokenizer,
    arch: ArchSpec,
    sets: Mapping[str, Sequence[str]],
    runs: Mapping[str, Sequence[Intervention]],
    cfg: RefusalConfig,
    *,
    max_new_tokens: int | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Greedy completions ``{set: {run: texts}}`` (``max_new_tokens`` None: the config's)."""
    return {
        name: {
            run: complete(
                lm,
                tokenizer,
                arch,
                list(prompts),
                ivs,
                max_new_tokens=max_new_tokens or cfg.max_new_tokens,
                batch_size=cfg.batch_size,
                template=cfg.template,
            )
            for run, ivs in runs.items()
        }
        for name, prompts in sets.items()
    }


def logprobs_by_run(
    lm,
    tokenizer,
    arch: ArchSpec,
    sets: Mapping[str, Sequence[str]],
    runs: Mapping[str, Sequence[Intervention]],
    cfg: RefusalConfig,
) -> dict[str, dict[str, torch.Tensor]]:
    """First-response-token log-probabilities ``{set: {run: [n, vocab]}}`` (float32, on the CPU)."""
    return {
        name: {
            run: run_prompts(
                lm,
                arch,
                tokenizer,
                encode_prompts(tokenizer, list(prompts), template=cfg.template),
                ivs,
                batch_size=cfg.batch_size,
            )[0]
            .float()
            .cpu()
            for run, ivs in runs.items()
        }
        for name, prompts in sets.items()
    }

"""Default sizes of an ``analyze`` run, scaled with the model and the device.

A user who passes no budget flags gets sizes that finish in minutes: on a CPU a
0.5B-parameter pair costs about one forward pass per token per model, so the token
budget shrinks in proportion to the parameter count; on a GPU the same time buys
about a hundred times more tokens. The crosscoder's dictionary and its training
steps follow the token budget (a dictionary much wider than the data it sees only
adds dead latents). Every size a flag gives wins over the estimate; the report
records the sizes that were used and where each came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CPU_WORK = 1e13
"""Token x parameter products a CPU run may spend on the statistics (0.5B params -> 20k tokens)."""
GPU_WORK = 2e15
"""The same on a GPU (0.5B params -> the 2M-token cap, 7B -> about 285k tokens)."""
CPU_TOKENS = (4_000, 20_000)
"""Smallest and largest CPU token budget."""
GPU_TOKENS = (100_000, 2_000_000)
"""Smallest and largest GPU token budget."""
TOKENS_PER_LATENT = 64
"""Harvested tokens per crosscoder latent (the dictionary grows with the data)."""
LATENTS = (256, 16_384)
"""Smallest and largest crosscoder dictionary."""
EPOCHS = 10
"""Passes over the harvest the crosscoder's training aims for (batch of :data:`BATCH` tokens)."""
BATCH = 512
"""Crosscoder batch the step count is sized for."""
STEPS = (400, 20_000)
"""Fewest and most crosscoder training steps."""
AMPLIFY_PROMPTS = {"cpu": 6, "gpu": 32}
"""Prompts logit-difference amplification generates on when counting a given target (each at every α,
plus the base alone)."""
AMPLIFY_WORD_WORK = {"cpu": 3e9, "gpu": 1e12}
"""Prompt x parameter products amplification may spend without a target, where the emerging words need
more prompts to tell a planted word from chance (0.5B params: 6 prompts on a CPU, the 128 cap on a GPU)."""
AMPLIFY_WORD_PROMPTS = {"cpu": (6, 32), "gpu": (32, 128)}
"""Fewest and most prompts without a target (a tiny model on a CPU gets the most)."""
AMPLIFY_TOKENS = {"cpu": 32, "gpu": 96}
"""Longest amplified completion, in tokens."""


@dataclass
class Budget:
    """The sizes one run uses."""

    device: str
    """Device type of the fine-tuned model's weights (cpu, cuda, mps, ...)."""
    parameters: int
    """Parameters of the fine-tuned model (the estimate's input)."""
    tokens: int
    """Token budget of the statistics and of the crosscoder's harvest."""
    crosscoder_latents: int
    """Latents of the crosscoder trained by default."""
    crosscoder_steps: int
    """Its training steps."""
    transcripts: int
    """Self-generated chat transcripts (when the data has none)."""
    transcript_tokens: int
    """Longest self-generated answer, in tokens."""
    transcript_batch: int
    """Prompts generated together."""
    amplify_prompts: int
    """Prompts of the logit-difference amplification section."""
    amplify_tokens: int
    """Longest amplified completion, in tokens."""
    chosen_by: dict
    """Per size, ``"flag"`` (the user gave it) or ``"auto"`` (estimated here)."""

    def to_dict(self) -> dict:
        """Plain dict for the report."""
        return asdict(self)


def _clamp(x: float, lo_hi: tuple[int, int]) -> int:
    return int(min(max(x, lo_hi[0]), lo_hi[1]))


def _pow2_floor(x: float) -> int:
    n = 1
    while n * 2 <= x:
        n *= 2
    return n


def auto_budget(
    parameters: int,
    device: str,
    d_model: int,
    *,
    tokens: int | None = None,
    crosscoder_latents: int | None = None,
    crosscoder_steps: int | None = None,
    transcripts: int | None = None,
    transcript_tokens: int | None = None,
    amplify_prompts: int | None = None,
    amplify_target: str | None = None,
) -> Budget:
    """Sizes for a model of ``parameters`` on ``device``; any size given here is kept as is.

    Amplification with an ``amplify_target`` counts one string and needs only a handful
    of prompts; without one it ranks words by how many prompts' answers contain them,
    and gets as many prompts as its share of the work allows.
    """
    gpu = device not in ("cpu", "meta")
    given = {
        "tokens": tokens,
        "crosscoder_latents": crosscoder_latents,
        "crosscoder_steps": crosscoder_steps,
        "transcripts": transcripts,
        "transcript_tokens": transcript_tokens,
        "amplify_prompts": amplify_prompts,
    }
    n = max(int(parameters), 1)
    if tokens is None:
        work, span = (GPU_WORK, GPU_TOKENS) if gpu else (CPU_WORK, CPU_TOKENS)
        tokens = _clamp(round(work / n, -3), span)
    if crosscoder_latents is None:
        cap = min(LATENTS[1], max(LATENTS[0], 32 * d_model))  # at most 32x expansion
        crosscoder_latents = min(cap, max(LATENTS[0], _pow2_floor(tokens / TOKENS_PER_LATENT)))
    if crosscoder_steps is None:
        crosscoder_steps = _clamp(tokens * EPOCHS // BATCH, STEPS)
    if transcripts is None:
        transcripts = 256 if gpu else 32
    if transcript_tokens is None:
        transcript_tokens = 128 if gpu else 64
    kind = "gpu" if gpu else "cpu"
    if amplify_prompts is None and amplify_target is not None:
        amplify_prompts = AMPLIFY_PROMPTS[kind]
    elif amplify_prompts is None:
        amplify_prompts = _clamp(AMPLIFY_WORD_WORK[kind] / n, AMPLIFY_WORD_PROMPTS[kind])
    return Budget(
        device=device,
        parameters=n,
        tokens=tokens,
        crosscoder_latents=crosscoder_latents,
        crosscoder_steps=crosscoder_steps,
        transcripts=transcripts,
        transcript_tokens=transcript_tokens,
        transcript_batch=64 if gpu else 16,
        amplify_prompts=amplify_prompts,
        amplify_tokens=AMPLIFY_TOKENS[kind],
        chosen_by={k: "auto" if v is None else "flag" for k, v in given.items()},
    )


def fit_to_harvest(budget: Budget, harvested: int, d_model: int) -> tuple[int, int]:
    """``(latents, steps)`` of the crosscoder for the tokens the harvest actually got.

    The data may run out before the budget does (a small corpus on a GPU budget); the
    estimated sizes then shrink to what was harvested, and sizes given by flags stay.
    """
    fitted = auto_budget(budget.parameters, budget.device, d_model, tokens=max(harvested, 1))
    latents, steps = budget.crosscoder_latents, budget.crosscoder_steps
    if budget.chosen_by.get("crosscoder_latents") == "auto":
        latents = min(latents, fitted.crosscoder_latents)
    if budget.chosen_by.get("crosscoder_steps") == "auto":
        steps = min(steps, fitted.crosscoder_steps)
    return latents, steps


def pair_budget(pair, cfg) -> Budget:
    """The :class:`Budget` for a loaded pair under an ``AnalyzeConfig`` (its flags win)."""
    model = pair.hf("finetuned")
    first = next(model.parameters())
    return auto_budget(
        sum(p.numel() for p in model.parameters()),
        "remote" if pair.remote else first.device.type,
        pair.d_model,
        tokens=cfg.tokens,
        crosscoder_latents=cfg.crosscoder_latents,
        crosscoder_steps=cfg.crosscoder_steps,
        transcripts=cfg.transcripts,
        transcript_tokens=cfg.transcript_tokens,
        amplify_prompts=cfg.amplify_prompts,
        amplify_target=cfg.amplify_target,
    )

"""The whole report as typed results: report.json's top level, and reading a report dict into it.

:class:`ReportResults` is report.json: the models, the inputs, each step's status, one
typed section per method (``results_stats``, ``results_refusal``, ``results_crosscoder``,
``results_lens``), the findings, thresholds, config and reproduce command. Its JSON schema
is ``diffing/report/schema.json`` (generated: ``python -m diffing.report.schema``).

Two ways in: :func:`validate_results` is the writer's check (every key, strict, a
violation is a bug and raises naming its path); :func:`read_sections` is the findings'
tolerant reading of a report dict someone assembled (a section that does not match its
model reads as absent, so one malformed section never breaks the summary).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from diffing.errors import DiffingError
from diffing.report.budget import Budget
from diffing.report.findings import Thresholds
from diffing.report.results_common import JsonDict, Result
from diffing.report.results_crosscoder import Crosscoder, DiffSAE
from diffing.report.results_lens import PCA, Amplify, Mining
from diffing.report.results_refusal import Refusal, RefusalLink
from diffing.report.results_stats import ADL, KL, Activations, TokenCounts, Weights

SECTION_MODELS: dict[str, type[Result]] = {
    "weights": Weights,
    "activations": Activations,
    "kl": KL,
    "adl": ADL,
    "refusal": Refusal,
    "crosscoder": Crosscoder,
    "amplify": Amplify,
    "diff_sae": DiffSAE,
    "refusal_link": RefusalLink,
    "pca": PCA,
    "mining": Mining,
}
"""Report key -> model of every section result (each null in report.json when its step did not run)."""


class Models(Result):
    """The two models compared."""

    base: str
    """The base model as named (hub id or folder)."""
    finetuned: str
    """The fine-tuned model as named (or the adapter folder)."""
    adapter: str | None = None
    """The PEFT adapter folder, when the fine-tuned model is base + adapter."""
    family: str | None = None
    """``config.model_type``."""
    layers: int | None = None
    """Decoder blocks."""
    d_model: int | None = None
    """Residual stream width."""
    vocab_size: int | None = None
    """Tokenizer size."""
    parameters: dict[str, int] | None = None
    """Parameter count of each model ``{base, finetuned}``."""
    dtype: str | None = None
    """Weight dtype."""
    chat_template: bool | None = None
    """Whether the tokenizer has a chat template."""
    notes: list[str] | None = None
    """What the loader noticed (integrity checks, adapters)."""


class Transcripts(Result):
    """The chat transcripts the fine-tuned model wrote itself (the corpus had none)."""

    prompts: str
    """Where the prompts came from."""
    count: int
    """Transcripts written (or read from the cache)."""
    format: str
    """``chat``, or ``plain text`` for a model without a chat template."""
    max_new_tokens: int | None = None
    """Longest answer, in tokens."""
    cache_file: str | None = None
    """The cache file they are kept in."""
    reused_cache: bool | None = None
    """Whether the cache was reused rather than generated."""
    note: str | None = None
    """A caveat (for instance, answers cut at the token limit)."""


class Inputs(Result):
    """What the steps read: data sources, prompt sets and the budget."""

    model_config = ConfigDict(strict=False)  # ``budget`` is a dataclass, read from its dict

    data_source: str | None = None
    """Where the corpus came from: flags, the pair's organism.json, or the built-in data."""
    corpus: list[str] | None = None
    """The corpus specs (files, folders, ``hf:`` specs, named datasets)."""
    corpus_documents: dict[str, int] | None = None
    """Documents read ``{texts, chats}``."""
    transcripts: Transcripts | str | None = None
    """The chat transcripts the fine-tuned model wrote itself, or why none were generated."""
    stats_tokens: TokenCounts | None = None
    """Tokens the statistics read."""
    refusal_source: str | None = None
    """Where the refusal prompt sets came from."""
    refusal_prompts: list[str] | None = None
    """The prompt files or specs the refusal step read."""
    refusal_split_sizes: dict[str, list[int]] | None = None
    """Per set (harmful, harmless), the train/validation/test sizes."""
    amplify_prompts: str | None = None
    """Where the amplification prompts came from."""
    budget: Budget | None = None
    """The sizes this run used (token budget, crosscoder latents and steps, transcripts, amplification)."""


class SectionStatus(Result):
    """How one step ended."""

    status: Literal["ok", "skipped", "failed"]
    """ok; skipped (not asked for, or its method is not installed); failed (the step raised)."""
    reason: str | None = None
    """Why it was skipped or failed (None when ok)."""
    seconds: float
    """Wall time of the step."""


class Finding(Result):
    """One line of the summary, with the numbers it was drawn from."""

    id: str
    """The rule that made it (``refusal-direction``, ``non-finite-kl``, ...; docs/report.md)."""
    section: str
    """The report section holding its evidence."""
    title: str
    """The finding in one sentence."""
    detail: str
    """More numbers behind it."""
    anchor: str = Field(pattern=r"^#[a-z]")
    """The page section it links to (``#refusal``)."""
    evidence: JsonDict
    """The numbers it was drawn from (a missing one is null)."""


class Reproduce(Result):
    """How to make this report again."""

    command: str
    """The equivalent ``diffing analyze ...`` command."""
    versions: dict[str, str]
    """Versions of Python and the packages the report depends on."""
    config_command: str | None = None
    """The same from the run.toml written next to the report."""


class ConfigRecord(Result):
    """The ``AnalyzeConfig`` as a dict (the same content as run.toml; fields: ``diffing analyze --help``)."""

    base: str | None
    """The base model."""
    finetuned: str | None
    """The fine-tuned model."""
    sections: list[str]
    """The steps asked for."""


class ReportResults(BaseModel):
    """report.json: every number in the diff report. A section that did not run is null; its reason is under ``sections``."""

    model_config = ConfigDict(
        extra="allow", use_attribute_docstrings=True, title="diffing analyze report.json"
    )

    schema_version: Literal[1]
    """Version of this layout."""
    created: str
    """UTC time stamp of the run."""
    models: Models
    """The base and fine-tuned models: names, family, shapes, sizes."""
    inputs: Inputs
    """What the steps read."""
    sections: dict[str, SectionStatus]
    """Step name -> how it ended (weights, stats, refusal, crosscoder and the method steps)."""
    weights: Weights | None
    """Per-tensor relative weight change (the ``weights`` step; the ``stats`` step adds effective ranks)."""
    activations: Activations | None
    """Base vs fine-tuned residual streams per layer (``stats``)."""
    kl: KL | None
    """Next-token KL(fine-tuned || base) (``stats``)."""
    adl: ADL | None
    """Activation Difference Lens (``stats``)."""
    refusal: Refusal | None
    """Refusal directions, base vs fine-tuned, and the selected one's ablation and addition (``refusal``)."""
    crosscoder: Crosscoder | None
    """Crosscoder summary, top latents and Latent Scaling (``crosscoder``)."""
    amplify: Amplify | None = None
    """Logit-difference amplification (``amplify``)."""
    diff_sae: DiffSAE | None = None
    """A sparse autoencoder on the activation difference (``diff_sae``)."""
    refusal_link: RefusalLink | None = None
    """Crosscoder latents against the refusal direction (``refusal_link``)."""
    pca: PCA | None = None
    """Activation-difference PCA (``pca``)."""
    mining: Mining | None = None
    """Diff mining (``mining``)."""
    findings: list[Finding] = Field(max_length=5)
    """The most important findings, most important first."""
    thresholds: Thresholds
    """The thresholds the findings used."""
    config: ConfigRecord
    """The run config."""
    reproduce: Reproduce
    """The command that makes this report again, and the package versions."""
    non_finite: list[str] | None = None
    """Present only when some statistic was NaN or infinite: the JSON path of each (its value is null)."""


def _where(loc: tuple) -> str:
    """A pydantic error location as a report path: ``kl.by_role.text.mean``, ``activations.layers[3]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate_results(report: dict[str, Any]) -> ReportResults:
    """``report`` as :class:`ReportResults`; raise :class:`DiffingError` naming the first path that does not match.

    The report is the package's own output, so a violation is a bug in a step: the
    message names the path and the problem rather than showing a pydantic traceback.
    """
    try:
        return ReportResults.model_validate(report)
    except ValidationError as err:
        first = err.errors()[0]
        more = err.error_count() - 1
        extra = f" (and {more} more)" if more else ""
        raise DiffingError(
            f"report.json does not match its schema at {_where(first['loc'])}: {first['msg']}{extra}; "
            "this is a bug in the step that wrote that section, please report it"
        ) from None


def read_sections(report: dict[str, Any]) -> ReportResults:
    """A report dict as :class:`ReportResults`, each top-level key validated on its own; one that does not
    match (or is missing) reads as None.

    For the findings, which must work on any report dict (a partial one built by hand, an
    older report.json): a malformed section is absent rather than an error.
    """
    values: dict[str, Any] = {}
    for key in ReportResults.model_fields:
        value = report.get(key)
        try:
            values[key] = None if value is None else _adapter(key).validate_python(value)
        except ValidationError:
            values[key] = None
    return ReportResults.model_construct(**values)


@cache
def _adapter(key: str) -> TypeAdapter:
    """The validator of one top-level key of :class:`ReportResults` (its annotation, with the model's config)."""
    field = ReportResults.model_fields[key]
    model = SECTION_MODELS.get(key)
    return TypeAdapter(model if model is not None else field.annotation)

"""``diffing analyze BASE FT`` with no data flags: every section runs, on the pair's own or the built-in data.

Covers the data resolution (flags > organism.json > built-in), the self-generated
transcripts and their cache, the budgets, the named hub datasets offline, and the
exit code when a section fails.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from diffing.cli.main import main
from diffing.data import builtin
from diffing.errors import DiffingError
from diffing.report import AnalyzeConfig


def _report(out) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_organism_pair_runs_every_section_with_no_flags(organisms, tmp_path):
    """The fast chat organism, no flag but --out: stats, refusal and crosscoder all run on its own data."""
    out = tmp_path / "r"
    assert (
        main(["analyze", str(organisms / "base"), str(organisms / "chat"), "--out", str(out)]) == 0
    )
    rep = _report(out)
    assert {k: rep["sections"][k]["status"] for k in ("stats", "refusal", "crosscoder")} == {
        "stats": "ok",
        "refusal": "ok",
        "crosscoder": "ok",
    }
    for name in ("amplify", "diff_sae", "refusal_link"):  # the method sections, on by default
        assert rep["sections"][name]["status"] == "ok", rep["sections"][name]
    assert len(rep["adl"]["promoted_tokens"]) >= 5
    roles = set(rep["kl"]["by_role"])
    assert {"user", "assistant", "template"} <= roles  # per-role KL: the corpus has chats
    assert rep["refusal"]["refusal_rate"]["harmful"]["baseline"] >= 0.5
    assert rep["refusal"]["refusal_rate"]["harmful"]["ablation"] <= 0.10
    size = rep["crosscoder"]["summary"]["size"]
    assert size["trained_here"] and size["latents"] == rep["inputs"]["budget"]["crosscoder_latents"]
    assert len(rep["crosscoder"]["latents"]) > 0
    # the report says which data was used: the organism's own, found from its organism.json
    inputs = rep["inputs"]
    assert inputs["data_source"] == f"organism ({organisms / 'organism.json'})"
    assert inputs["corpus"] == [
        str(organisms / "corpus/text.txt"),
        str(organisms / "corpus/chat.jsonl"),
    ]
    assert inputs["transcripts"] == "none generated: the corpus has chat transcripts"
    assert inputs["refusal_source"] == "organism"
    assert inputs["refusal_prompts"][0] == str(organisms / "prompts/harmful_train.jsonl")
    assert inputs["budget"]["device"] == "cpu" and inputs["budget"]["chosen_by"]["tokens"] == "auto"
    assert inputs["stats_tokens"]["total"] == inputs["budget"]["tokens"]


@pytest.mark.slow
def test_builtin_data_on_a_tiny_pair(tiny_pair, tiny_pair_dirs, tmp_path):
    """A pair with a chat template and no data of its own: built-in corpus + its own transcripts, built-in prompt sets."""
    from diffing.report import analyze
    from diffing.report.inputs import builtin_corpus_files, prompt_splits

    cfg = AnalyzeConfig(sections=["stats"], tokens=600, transcripts=5, transcript_tokens=6)
    rep = analyze(
        *map(str, tiny_pair_dirs), tmp_path / "out", config=cfg, pair=tiny_pair, progress=None
    )
    assert rep.data["sections"]["stats"]["status"] == "ok"
    inputs = rep.data["inputs"]
    assert inputs["data_source"] == "built-in"
    files = [str(p) for p in builtin_corpus_files()]
    assert files and all(p.endswith(".jsonl") and "/corpus-" in p for p in files)
    tr = inputs["transcripts"]
    assert inputs["corpus"] == [*files, tr["cache_file"]]
    assert (tr["count"], tr["max_new_tokens"], tr["format"]) == (5, 6, "chat")
    assert tr["prompts"] == "built-in chat_prompts.jsonl" and tr["reused_cache"] is False
    lines = (tmp_path / "out" / "data").glob("self-transcripts-*.jsonl")
    (cache,) = list(lines)
    chats = [json.loads(line)["messages"] for line in cache.read_text().splitlines()]
    assert len(chats) == 5 and all(c[0]["content"] in builtin.chat_prompts() for c in chats)
    assert all(c[1]["role"] == "assistant" for c in chats)
    assert inputs["corpus_documents"]["chats"] == 5
    assert (
        "assistant" in rep.data["kl"]["by_role"]
    )  # the transcripts gave the KL its assistant tokens
    # refusal on the built-in sets: every prompt used once, split into disjoint parts
    splits = prompt_splits(tiny_pair, AnalyzeConfig(base="b", finetuned=str(tiny_pair_dirs[1])))
    train, val, test = splits["harmful"]
    total, k = len(builtin.harmful_prompts()), min(32, len(builtin.harmful_prompts()) // 4)
    assert len(val) == len(test) == k and len(train) == min(4 * 32, total - 2 * k)
    assert not set(test) & (set(train) | set(val))


def test_transcripts_are_greedy_batched_and_cached(tiny_pair, tmp_path):
    """Left-padded batches give each prompt's unbatched greedy answer; a second call reads the cache file."""
    from diffing.data.transcripts import TranscriptSettings, model_fingerprint, self_transcripts
    from diffing.generation import prompt_ids

    model, tok = tiny_pair.hf("finetuned"), tiny_pair.tokenizer
    prompts = ["hi", "tell me about the rivers of the north", "why?"]
    settings = TranscriptSettings(max_new_tokens=5, batch_size=3)
    first = self_transcripts(model, tok, prompts, tmp_path, model_ref="ft", settings=settings)
    assert not first.reused and first.path.parent == tmp_path
    assert [c[0]["content"] for c in first.chats] == prompts
    for prompt, chat in zip(prompts, first.chats):  # one prompt at a time, no padding at all
        ids = torch.tensor([prompt_ids(tok, prompt, chat=True)])
        out = model.generate(
            input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id
        )
        assert (
            chat[1]["content"]
            == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        )
    stamp, text = first.path.stat().st_mtime_ns, first.path.read_text()
    again = self_transcripts(model, tok, prompts, tmp_path, model_ref="ft", settings=settings)
    assert again.reused and again.path == first.path and again.chats == first.chats
    assert first.path.stat().st_mtime_ns == stamp and first.path.read_text() == text
    other = self_transcripts(
        model, tok, prompts, tmp_path, model_ref="ft", settings=TranscriptSettings(max_new_tokens=3)
    )
    assert not other.reused and other.path != first.path  # the settings are part of the key
    # the model's identity is part of the key: the same name with other weights is another model
    base = tiny_pair.hf("base")
    assert model_fingerprint(base, "ft") != model_fingerprint(model, "ft")
    assert model_fingerprint(model, "ft") == model_fingerprint(model, "ft")
    assert other.describe("p", TranscriptSettings(max_new_tokens=3))["cache_file"] == str(
        other.path
    )


def test_transcripts_without_chat_template_are_plain_text(tiny_pair, tmp_path):
    from diffing.data.transcripts import TranscriptSettings, self_transcripts

    tok = copy.deepcopy(tiny_pair.tokenizer)
    tok.chat_template = None
    got = self_transcripts(
        tiny_pair.hf("finetuned"), tok, ["a b", "c"], tmp_path, settings=TranscriptSettings(4)
    )
    assert got.chats == [] and len(got.texts) == 2 and got.texts[0].startswith("a b\n")
    assert "no chat template" in got.note
    assert got.describe("p", TranscriptSettings(4))["format"] == "plain text"


def test_named_datasets_offline_fail_with_one_line(monkeypatch, tmp_path):
    from diffing.data import named
    from diffing.report.inputs import corpus_specs, prompt_splits

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        DiffingError,
        match=r"^`harmful` advbench reads hf:walledai/AdvBench:train .* offline mode is set .*omit `harmful` to use the built-in set$",
    ):
        named.resolve_named("advbench", "harmful")
    cfg = AnalyzeConfig(base="b", finetuned=str(tmp_path), harmless="alpaca")
    with pytest.raises(DiffingError, match="omit `harmless` to use the built-in set"):
        prompt_splits(None, cfg)
    with pytest.raises(DiffingError, match="omit `data` to use the built-in corpus"):
        corpus_specs(None, AnalyzeConfig(data=["FineWeb"]))
    with pytest.raises(DiffingError, match="not a named dataset; named ones: alpaca"):
        named.resolve_named("advbench", "harmless")
    # online, a name stands for its table entry
    monkeypatch.setattr(named, "hub_reachable", lambda timeout=3.0: True)
    assert corpus_specs(None, AnalyzeConfig(data=["fineweb", "x.txt"])) == (
        "flags",
        ["hf:HuggingFaceFW/fineweb:train", "x.txt"],
    )
    assert all(e.spec.startswith("hf:") for e in named.NAMED.values())


def test_named_table_is_documented():
    from pathlib import Path

    from diffing.data.named import NAMED

    doc = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    for name, entry in NAMED.items():
        assert f"`{name}`" in doc and entry.spec in doc


@pytest.mark.slow
def test_failed_section_exits_non_zero_with_the_report_written(tiny_pair_dirs, tmp_path):
    out = tmp_path / "r"
    missing = str(tmp_path / "nope.txt")
    args = ["analyze", *map(str, tiny_pair_dirs), "--out", str(out), "--sections", "refusal"]
    assert main([*args, "--harmful", missing]) == 1
    rep = _report(out)
    assert rep["sections"]["refusal"]["status"] == "failed"
    assert (
        "nope.txt" in rep["sections"]["refusal"]["reason"]
        and "does not exist" in rep["sections"]["refusal"]["reason"]
    )
    assert rep["sections"]["stats"] == {
        "status": "skipped",
        "reason": "not requested (--sections)",
        "seconds": 0.0,
    }
    assert (out / "index.html").is_file()


def test_budget_scales_with_parameters_and_device():
    from diffing.report.budget import auto_budget, fit_to_harvest

    cpu = auto_budget(500_000_000, "cpu", 896)
    assert (cpu.tokens, cpu.crosscoder_latents, cpu.crosscoder_steps) == (20_000, 256, 400)
    assert (cpu.transcripts, cpu.transcript_tokens) == (32, 64)
    assert auto_budget(7_000_000_000, "cpu", 4096).tokens == 4_000  # the CPU floor
    gpu = auto_budget(500_000_000, "cuda", 896)
    assert (gpu.tokens, gpu.crosscoder_latents, gpu.crosscoder_steps) == (2_000_000, 16_384, 20_000)
    big = auto_budget(7_000_000_000, "cuda", 4096)
    assert (big.tokens, big.crosscoder_latents, big.crosscoder_steps) == (286_000, 4096, 5585)
    given = auto_budget(7_000_000_000, "cuda", 4096, tokens=1234, crosscoder_latents=64)
    assert (given.tokens, given.crosscoder_latents) == (1234, 64)
    assert given.chosen_by["tokens"] == "flag" and given.chosen_by["crosscoder_steps"] == "auto"
    # a harvest that ran out of data shrinks the estimated sizes, never the ones a flag gave
    assert fit_to_harvest(gpu, 100_000, 896) == (1024, 1953)
    assert fit_to_harvest(given, 100, 4096) == (64, 400)


def test_split_matches_the_refusal_commands_rule():
    """analyze splits a prompt file by the refusal package's own rule, with the sizes it documents."""
    from diffing.refusal import io
    from diffing.refusal.config import RefusalConfig
    from diffing.report.inputs import split

    prompts = [f"p{i}" for i in range(40)]
    train, val, test = split(prompts, 8, 3, "harmful")
    if hasattr(io, "split_set"):
        cfg = RefusalConfig(n_train=32, n_val=8, n_test=8, min_train=4, seed=3)
        want = io.split_set(prompts, cfg, "harmful")
        assert (train, val, test) == (want.train, want.val, want.test)
    else:
        held = io.split_prompts(prompts, 40, 8, min_train=12, seed=4, name="harmful")
        rest = io.split_prompts(held.train, 32, 8, min_train=4, seed=3, name="harmful")
        assert (train, val, test) == (rest.train, rest.val, held.val)
    assert (len(train), len(val), len(test)) == (24, 8, 8)
    assert sorted(train + val + test) == sorted(prompts)
    assert split(prompts, 8, 3, "harmful") == (train, val, test)  # seeded: the same every time
    with pytest.raises(DiffingError, match="too few"):
        split(prompts[:5], 8, 0, "harmful")


def test_organism_build_draws_a_bar_per_variant():
    from diffing.organisms.build import StageBars

    bars = StageBars({"base": 10, "eval-base": 2, "chat": 30, "eval-chat": 2, "quirk": 40}, False)
    bars.stage("base")
    assert (bars.bar.total, bars.name) == (12, "base")
    bars.step("base")(1, 0.5)
    first = bars.bar
    bars.stage("evaluate base")  # evaluation continues the variant's bar
    assert bars.bar is first and bars.name == "base"
    bars.stage("chat")
    assert bars.bar is not first and (bars.bar.total, bars.name) == (32, "chat")
    bars.stage("chat + quirk")  # variants trained side by side share one bar
    assert bars.bar.total == 72
    bars.close()


def test_command_line_names_the_negative_flag(tmp_path):
    from diffing.cli.analyze import config_from_args
    from diffing.cli.main import build_parser
    from diffing.report.pipeline import command_line

    args = build_parser().parse_args(["analyze", "B", "F", "--no-crosscoder", "--transcripts", "3"])
    cfg = config_from_args(args)
    assert (cfg.train_crosscoder, cfg.transcripts, cfg.tokens) == (False, 3, None)
    line = command_line(cfg, tmp_path)
    assert line.endswith("--transcripts 3 --no-crosscoder") and "--tokens" not in line
    again = config_from_args(build_parser().parse_args(line.split()[1:]))
    assert again == cfg

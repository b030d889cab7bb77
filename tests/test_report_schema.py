"""report.json's typed results and the schema generated from them.

The shipped ``diffing/report/schema.json`` must be what ``python -m diffing.report.schema``
generates; a real report (every section, fast chat organism, small budget) validates both
through the models and through the shipped schema; a wrong type anywhere is refused with
its path; every key the schema promises says what it is.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from diffing.errors import DiffingError
from diffing.report import (
    AnalyzeConfig,
    compute_findings,
    load_schema,
    validate_report,
    write_report,
)
from diffing.report.config import SECTIONS
from diffing.report.pipeline import RESULT_KEYS, empty_report
from diffing.report.results import SECTION_MODELS, ReportResults, read_sections
from diffing.report.schema import SCHEMA_PATH, schema_text


def test_shipped_schema_is_generated_from_the_models():
    """Regenerate with ``python -m diffing.report.schema`` after changing a model in report/results*.py."""
    assert SCHEMA_PATH.read_text() == schema_text()


def test_every_result_key_has_a_model_and_every_field_a_description():
    """Each section key is in the schema (null when its step did not run), and every property says what it is."""
    schema = load_schema()
    assert tuple(SECTION_MODELS) == RESULT_KEYS
    props = schema["properties"]
    for key in RESULT_KEYS:
        assert {"type": "null"} in props[key]["oneOf"], key
    missing = [f"(top).{k}" for k, v in props.items() if not v.get("description")]
    for name, definition in schema["$defs"].items():
        assert definition.get("description"), name
        for key, prop in (definition.get("properties") or {}).items():
            if not prop.get("description"):
                missing.append(f"{name}.{key}")
    assert not missing, missing


def test_docs_list_every_top_level_key():
    """docs/report.md's key table and the models name the same top-level keys."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "report.md").read_text()
    table = text.split("## report.json keys")[1].split("\n## ")[0]
    documented = {m.group(1) for m in re.finditer(r"^\| `([a-z_]+)", table, re.M)}
    assert documented == set(load_schema()["properties"])


def _minimal() -> dict:
    """A report with no section run: the smallest valid report."""
    r = empty_report(AnalyzeConfig(base="b", finetuned="f"), {"base": "b", "finetuned": "f"})
    r["reproduce"]["command"] = "diffing analyze b f --out x"
    return r


def test_wrong_types_are_refused_naming_the_path():
    r = _minimal()
    r["kl"] = {"mean": 0.3, "by_role": {"user": {"mean": "high"}}}
    with pytest.raises(
        DiffingError, match=r"at kl\.by_role\.user\.mean: Input should be a valid number"
    ):
        validate_report(r)
    r["kl"] = None
    r["activations"] = {"layers": [{"layer": 0, "cosine": 0.9}, {"layer": True, "cosine": 0.9}]}
    with pytest.raises(DiffingError, match=r"at activations\.layers\[1\]\.layer: .*valid integer"):
        validate_report(r)
    r["activations"] = None
    r["sections"] = {"stats": {"status": "done", "seconds": 1.0}}
    with pytest.raises(
        DiffingError,
        match=r"at sections\.stats\.status: Input should be 'ok', 'skipped' or 'failed'",
    ):
        validate_report(r)


def test_write_report_refuses_a_wrong_section_before_writing(tmp_path):
    """A section of the wrong shape is a bug: the write stops with its path and leaves nothing behind."""
    r = _minimal()
    r["refusal"] = {"selected": {"layer": "2", "position": -1}, "refusal_rate": {}}
    with pytest.raises(DiffingError, match=r"at refusal\.selected\.layer"):
        write_report(r, tmp_path / "out")
    assert not (tmp_path / "out" / "report.json").exists()


def test_write_report_reads_its_thresholds_typed(tmp_path):
    """The thresholds recorded in the report (not the defaults) decide the findings."""
    r = _minimal()
    r["sections"] = {"stats": {"status": "ok", "reason": None, "seconds": 1.0}}
    r["kl"] = {"mean": 0.5, "by_role": {}}
    assert [f["id"] for f in write_report(copy.deepcopy(r), tmp_path / "a").findings] == [
        "kl-hot-role"
    ]
    r["thresholds"]["kl_mean"] = 0.6
    rep = write_report(r, tmp_path / "b")
    assert [f["id"] for f in rep.findings] == ["no-substantial-change"]
    assert validate_report(rep.data).thresholds.kl_mean == 0.6


def test_non_finite_values_validate_and_read_back():
    """A NaN statistic is a float while the report is built and null in report.json: both validate."""
    from diffing.io import dumps

    r = _minimal()
    r["kl"] = {"mean": float("nan"), "by_role": {}}
    assert validate_report(r).kl.mean != validate_report(r).kl.mean  # NaN
    back = json.loads(dumps(r, non_finite="null"))
    typed = validate_report(back)
    assert typed.kl.mean is None and typed.non_finite == ["kl.mean"]


def test_read_sections_drops_only_the_malformed_section():
    """The findings' reading: a section that does not match its model is absent, the others are typed."""
    typed = read_sections(
        {"kl": {"mean": "x"}, "weights": {"modules": [{"name": "w", "relative_change": 0.5}]}}
    )
    assert typed.kl is None and typed.adl is None
    assert typed.weights.modules[0].name == "w" and typed.weights.modules[0].relative_change == 0.5


def test_findings_skip_only_a_malformed_section():
    """A hand-built report with one malformed section: that section gives no finding, the others still do."""
    r = {"weights": {"modules": [{"name": "w", "relative_change": 0.3}]}, "kl": {"mean": "high"}}
    found = compute_findings(r)
    assert [f["id"] for f in found] == ["weights-top-module"]
    assert found[0]["evidence"] == {
        "module": "w",
        "relative_change": 0.3,
        "modules_above_threshold": 1,
    }


@pytest.fixture(scope="module")
def small_report(organisms, tmp_path_factory):
    """``analyze`` with every section on base -> chat, at a small budget (the contents are not judged here)."""
    from diffing.report import analyze

    cfg = AnalyzeConfig(tokens=3_000, crosscoder_steps=60, refusal_prompts=16, amplify_prompts=2)
    out = tmp_path_factory.mktemp("schema") / "report"
    return analyze(str(organisms / "base"), str(organisms / "chat"), out, config=cfg, progress=None)


@pytest.mark.slow
def test_real_report_validates_against_models_and_schema(small_report):
    data = json.loads(small_report.json.read_text())
    assert {k: v["status"] for k, v in data["sections"].items()} == dict.fromkeys(
        ("weights", *SECTIONS), "ok"
    )
    typed = validate_report(data)
    assert isinstance(typed, ReportResults)
    jsonschema.validate(data, load_schema())
    # typed fields hold the numbers report.json holds
    assert typed.refusal.selected.layer == data["refusal"]["selected"]["layer"]
    assert typed.kl.mean == data["kl"]["mean"]
    assert [x.index for x in typed.crosscoder.latents] == [
        x["index"] for x in data["crosscoder"]["latents"]
    ]
    assert typed.crosscoder.latents[0].class_ == data["crosscoder"]["latents"][0]["class"]
    assert typed.inputs.budget.tokens == data["inputs"]["budget"]["tokens"] == 3_000
    assert typed.findings[0].id == data["findings"][0]["id"]
    # a wrong type in any section of this real report is refused with its path
    bad = copy.deepcopy(data)
    bad["diff_sae"]["top_latents"][0]["share"] = "large"
    with pytest.raises(DiffingError, match=r"at diff_sae\.top_latents\[0\]\.share"):
        validate_report(bad)

"""Every experiment folder is complete, and every ``--dry-run`` runs the whole pipeline on tiny models.

The dry runs swap the paper-scale models for tiny random ones of the same family and the data
for synthetic files (see experiments/README.md); they check the plumbing end to end: each step
ran and wrote well-formed outputs whose numbers are consistent (counts add up, fractions lie in
[0, 1], saved models load back, the report validates against its schema).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent)
)  # benchmarks/, experiments/ live at the root

import pytest

from experiments.common import deep_merge, experiment_names, load_config, load_toml, torch_threads

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"crosscoder_gemma2_2b", "refusal_direction", "analyze_chat_checkpoint", "organisms"}


def test_every_experiment_folder_has_readme_config_and_runner():
    folders = {
        p.name
        for p in (ROOT / "experiments").iterdir()
        if p.is_dir() and not p.name.startswith(("_", "."))
    }
    assert EXPECTED <= set(experiment_names()) == folders
    for name in sorted(folders):
        folder = ROOT / "experiments" / name
        cfg = load_toml(folder / "config.toml")  # parses with tomllib
        assert "dry_run" in cfg, f"{name}: config.toml has no [dry_run] table"
        readme = (folder / "README.md").read_text()
        assert f"python -m experiments.run {name}" in readme and "--dry-run" in readme, name
        assert (folder / "run.py").is_file() and (folder / "__init__.py").is_file(), name


def test_dry_run_table_is_merged_over_the_full_config():
    full = load_config("crosscoder_gemma2_2b")
    dry = load_config("crosscoder_gemma2_2b", dry_run=True)
    assert (
        full["harvest"]["tokens"] == 100_000_000
        and full["crosscoder"]["batchtopk"]["dict_size"] == 73_728
    )
    assert dry["harvest"]["tokens"] < 10_000 and dry["crosscoder"]["batchtopk"]["dict_size"] < 1000
    assert dry["harvest"]["data"] == full["harvest"]["data"]  # untouched keys survive the merge
    assert dry["tiny"]["family"] == "gemma2" and dry["dry_run"] and not full["dry_run"]
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_script_entry_point_runs_from_any_directory(tmp_path):
    """``python experiments/NAME/run.py`` works without installing the experiments package."""
    script = ROOT / "experiments" / "organisms" / "run.py"
    res = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "--dry-run" in res.stdout


def _run(name: str, out: Path) -> dict:
    from experiments.run import run_experiment

    results = run_experiment(name, dry_run=True, out=out, progress=None)
    assert json.loads((out / "results.json").read_text())["experiment"] == name
    return results


@pytest.mark.slow
def test_dry_run_crosscoder_gemma2_2b(tmp_path):
    from diffing.crosscoder import CrossCoder
    from diffing.store import ActivationStore

    res = _run("crosscoder_gemma2_2b", tmp_path)
    cfg = load_config("crosscoder_gemma2_2b", dry_run=True)
    store = ActivationStore.open(tmp_path / "store")
    store.verify()
    assert (
        store.layers == [cfg["harvest"]["layer"]] and res["store"]["tokens"] == store.n_tokens > 0
    )
    assert set(res["crosscoders"]) == {"batchtopk", "l1"}
    for kind, r in res["crosscoders"].items():
        n = cfg["crosscoder"][kind]["dict_size"]
        cc = CrossCoder.load(tmp_path / f"crosscoder-{kind}")
        assert (
            cc.cfg.kind == kind
            and cc.cfg.dict_size == n
            and cc.cfg.layer == cfg["harvest"]["layer"]
        )
        assert r["steps"] == cfg["crosscoder"][kind]["steps"]
        for key in ("variance_explained_base", "variance_explained_chat"):
            assert math.isfinite(r[key]) and r[key] <= 1.0
        assert 0.0 <= r["dead_fraction"] <= 1.0
        assert sum(r["classes"].values()) == n  # every latent gets exactly one class
        latents = json.loads((tmp_path / f"analysis-{kind}" / "latents.json").read_text())
        assert len(latents) == n
        for fig in ("delta_histogram.png", "nu_scatter.png", "cosine_histogram.png"):
            assert (tmp_path / f"analysis-{kind}" / fig).stat().st_size > 1000
        assert set(r["causal"]) >= {
            "chat_only",
            "random",
        }  # the causal check ran on the transcripts
    assert res["paper"]["batchtopk"]["variance_explained_base"] == 0.877


@pytest.mark.slow
def test_dry_run_analyze_chat_checkpoint(tmp_path):
    from diffing.report import AnalyzeConfig, validate_report

    res = _run("analyze_chat_checkpoint", tmp_path)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    validate_report(report)
    status = {k: v["status"] for k, v in res["sections"].items()}
    expected = {"weights": "ok", "stats": "ok", "refusal": "ok", "crosscoder": "ok"}
    # the method sections; the refusal link needs a refusal direction, which there is none of here
    expected |= {
        "amplify": "ok",
        "diff_sae": "ok",
        "refusal_link": "skipped",
        "pca": "ok",
        "mining": "ok",
    }
    assert status == expected, res["sections"]
    # random models do not refuse: the section must say so (and why), not invent a direction
    assert (
        report["refusal"]["verdict"] == "does-not-refuse" and report["refusal"]["selected"] is None
    )
    assert "refusal tokens" in report["refusal"]["reason"]
    assert res["findings"] and (tmp_path / "report" / "index.html").stat().st_size > 10_000
    rerun = AnalyzeConfig.load(
        tmp_path / "report" / "run.toml"
    )  # the saved config reproduces the run
    assert rerun.harmful.endswith("harmful_behaviors.csv") and rerun.harmless.endswith(".json")
    # the tiny pair differs only in its MLPs: the weight table must say so
    assert all("mlp" in m["name"] for m in report["weights"]["modules"][:3])


@pytest.mark.slow
def test_dry_run_refusal_direction(tmp_path):
    from transformers import AutoModelForCausalLM

    res = _run("refusal_direction", tmp_path)
    cfg = load_config("refusal_direction", dry_run=True)
    families = cfg["tiny"]["families"]
    assert [m["family"] for m in res["models"].values()] == families
    for name, r in res["models"].items():
        assert 0 <= r["direction"]["layer"] < cfg["tiny"]["layers"], name
        assert abs(r["direction"]["unit_norm"] - 1.0) < 1e-4
        for split in ("harmful", "harmless"):
            for cond in ("baseline", "ablation", "addition"):
                assert 0.0 <= r["eval"]["refusal_rate"][split][cond] <= 1.0
        assert r["eval"]["kl_harmless"] >= 0.0
        exported = AutoModelForCausalLM.from_pretrained(r["export"])
        assert exported.config.model_type == r["family"]
        assert 0.0 <= r["export_eval"]["refusal_rate"]["harmful"]["baseline"] <= 1.0
        # the orthogonalised checkpoint, loaded fresh, behaves like the hook ablation of the original:
        # exactly for pre-norm families, closely where a norm follows each sublayer (Gemma-2; docs/methods.md section 4)
        tol = 1e-3 if r["family"] in ("qwen2", "llama") else 0.05
        for split in ("harmful", "harmless"):
            exported_score = r["export_eval"]["refusal_score"][split]["baseline"]
            assert abs(exported_score - r["eval"]["refusal_score"][split]["ablation"]) < tol, (
                name,
                split,
            )


@pytest.mark.slow
def test_dry_run_organisms(tmp_path):
    from diffing.report import validate_report

    res = _run("organisms", tmp_path)
    cfg = load_config("organisms", dry_run=True)
    assert list(res["variants"]) == cfg["organisms"]["variants"]
    for variant, r in res["variants"].items():
        validate_report(json.loads((tmp_path / variant / "report.json").read_text()))
        assert all(
            r["sections"][s]["status"] == "ok" for s in ["weights", *cfg["analyze"]["sections"]]
        ), r["sections"]
        assert r["findings"], variant
    chat = json.loads((tmp_path / "chat" / "report.json").read_text())
    # chat fine-tuning changes predictions on the chat template far more than on plain text
    assert chat["kl"]["by_role"]["template"]["mean"] > 5 * chat["kl"]["by_role"]["text"]["mean"]
    assert res["variants"]["quirk"]["checks"]["secret_word"]  # ground truth read from organism.json


@pytest.mark.slow
def test_quickstart_example_runs_on_the_organism(tmp_path, organisms):
    """examples/quickstart.py runs top to bottom on the chat organism and finds its planted refusal."""
    import os

    from diffing.report import validate_report

    env = {
        **os.environ,
        "QUICKSTART_OUT": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "report:" in res.stdout
    truth = json.loads((organisms / "organism.json").read_text())
    rates = json.loads((tmp_path / "refusal" / "eval.json").read_text())["refusal_rate"]
    assert truth["rates"]["chat"]["refusal_harmful"] >= 0.9  # the build's own measure: it refuses
    assert rates["harmful"]["baseline"] >= 0.9  # and the quickstart's evaluation agrees
    # adding the direction induces refusal on harmless prompts
    assert rates["harmless"]["addition"] > rates["harmless"]["baseline"]
    assert rates["harmful"]["ablation"] < rates["harmful"]["baseline"]  # ablating it removes some
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    validate_report(report)
    status = {k: v["status"] for k, v in report["sections"].items()}
    assert status["weights"] == status["stats"] == status["crosscoder"] == "ok", report["sections"]
    assert status["refusal"] in ("ok", "skipped"), report["sections"]["refusal"]  # never a crash
    assert (tmp_path / "crosscoder" / "crosscoder.safetensors").is_file()


@pytest.mark.slow
def test_refusal_dry_run_says_clearly_when_the_filters_discard_every_candidate(tmp_path):
    """With the paper's filters made impossible to pass, selection stops with a message naming them."""
    from diffing.errors import DiffingError
    from experiments.refusal_direction.run import run

    cfg = load_config("refusal_direction", dry_run=True)
    cfg["tiny"]["families"] = ["llama"]
    cfg["refusal"]["induce_threshold"] = 1e9  # no candidate can induce refusal this strongly
    cfg["export"]["enabled"] = False
    with pytest.raises(DiffingError, match="no candidate passes the selection filters") as err:
        with torch_threads(1):
            run(cfg, tmp_path, progress=None)
    assert "`induce_threshold`" in str(err.value) and "induce_threshold" in err.value.fields
    table = json.loads(
        (tmp_path / "llama-base" / "candidates.json").read_text()
    )  # written before selecting
    assert table["candidates"] and not any(c.get("valid") for c in table["candidates"])

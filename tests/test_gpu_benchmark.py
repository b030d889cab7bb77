"""``python -m benchmarks.gpu --small`` runs on a CPU and reports every measurement it promises."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_gpu_benchmark_small_reports_rates_and_ratios(tmp_path):
    from benchmarks import gpu

    out = tmp_path / "gpu.json"
    result = gpu.main(["--small", "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == result  # the file holds exactly what was printed
    assert result["device"] == "cpu" and result["setup"]["small"] is True
    h, s = result["harvest"], result["stats"]
    assert h["tokens"] == result["setup"]["tokens"]  # packed text: every batch full length
    assert 0 < h["stored_tokens"] <= h["tokens"]
    for key in ("bare_tok_s", "harvest_tok_s", "bare_seconds", "harvest_seconds", "ratio"):
        assert h[key] > 0, key
    assert h["ratio"] == pytest.approx(h["bare_seconds"] / h["harvest_seconds"], rel=1e-2)
    for key in ("bare_paired_forward_seconds", "stats_seconds", "ratio", "ratio_without_weights"):
        assert s[key] > 0, key
    assert s["ratio"] == pytest.approx(
        s["stats_seconds"] / s["bare_paired_forward_seconds"], rel=1e-2
    )
    assert s["weights_seconds"] >= 0 and s["tokens"] == result["setup"]["stats_tokens"]
    cc = result["crosscoder"]
    assert isinstance(cc, dict) and (cc.get("status") == "unavailable") == ("reason" in cc)

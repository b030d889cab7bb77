"""Outputs never land on a run's inputs or on another command's results; writers lock their folder."""

from __future__ import annotations

import json

import pytest
import torch

from diffing.cli.main import main
from diffing.errors import DiffingError
from diffing.io import OUT_MARKER, claim_out_dir, folder_lock


def test_claim_marks_the_folder_and_refuses_other_commands(tmp_path):
    out = claim_out_dir(tmp_path / "o", "stats")
    assert json.loads((out / OUT_MARKER).read_text()) == {"command": "stats"}
    assert claim_out_dir(tmp_path / "o", "stats") == out  # a rerun of the same command is fine
    with pytest.raises(DiffingError, match="holds the results of diffing stats"):
        claim_out_dir(tmp_path / "o", "harvest")
    assert claim_out_dir(tmp_path / "o", "harvest", force=True) == out


def test_unmarked_folders_are_recognised_by_their_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(DiffingError, match="a model checkpoint"):
        claim_out_dir(model, "stats")
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text("{}")
    with pytest.raises(DiffingError, match="diffing harvest"):
        claim_out_dir(store, "lens pca")
    assert claim_out_dir(store, "harvest") == store  # resuming its own store


def test_an_input_or_a_folder_inside_one_is_refused(tmp_path):
    src = tmp_path / "base"
    src.mkdir()
    with pytest.raises(DiffingError, match="is an input of this run"):
        claim_out_dir(src, "stats", inputs=[str(src)])
    with pytest.raises(DiffingError, match="is inside an input of this run"):
        claim_out_dir(src / "sub", "stats", inputs=[str(src)])
    assert claim_out_dir(tmp_path / "elsewhere", "stats", inputs=[str(src), "org/hub-id"])


def test_cli_refuses_an_out_that_is_the_model_folder(tiny_pair_dirs, tmp_path, capsys):
    base, ft = (str(p) for p in tiny_pair_dirs)
    before = sorted(p.name for p in tiny_pair_dirs[1].iterdir())
    data = tmp_path / "d.txt"
    data.write_text("one two three four\n")
    argv = ["stats", base, ft, "--data", str(data), "--tokens", "64", "--no-weights"]
    assert main([*argv, "--out", ft]) == 2
    err = capsys.readouterr().err
    assert "is an input of this run" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tiny_pair_dirs[1].iterdir()) == before  # nothing written
    harvest_out = tmp_path / "h"
    harvest_out.mkdir()
    (harvest_out / "stats.json").write_text("{}")  # another command's results
    hv = ["harvest", base, ft, "--layers", "0", "--data", str(data), "--tokens", "64"]
    assert main([*hv, "--out", str(harvest_out)]) == 2
    assert "holds the results of diffing stats" in capsys.readouterr().err


def test_a_second_writer_of_a_folder_gets_a_clear_error(tmp_path):
    held = folder_lock(tmp_path, "train-r000", "crosscoder training")
    with held:
        with pytest.raises(DiffingError, match="another crosscoder training is writing"):
            folder_lock(tmp_path, "train-r000", "crosscoder training")
    with folder_lock(tmp_path, "train-r000", "crosscoder training"):
        pass  # released: the folder can be written again


def test_crosscoder_training_holds_its_folder(tmp_path):
    from diffing.crosscoder import CrossCoderConfig, train_crosscoder

    x = torch.randn(512, 2, 8)  # [tokens, models, d]
    cfg = CrossCoderConfig(dict_size=16, k=2, batch_size=64, steps=2, checkpoint_every=0)
    with folder_lock(tmp_path / "cc", "train-r000", "crosscoder training"):
        with pytest.raises(DiffingError, match="another crosscoder training is writing"):
            train_crosscoder(x, cfg, tmp_path / "cc")
    res = train_crosscoder(x, cfg, tmp_path / "cc")  # free again
    assert res.out == tmp_path / "cc" and (tmp_path / "cc" / "crosscoder.safetensors").is_file()

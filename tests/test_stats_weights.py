"""Weight statistics: planted ranks, a single perturbed module ranks first, LoRA deltas are exact,
and streaming from safetensors gives the same numbers as the loaded models."""

from __future__ import annotations

import pytest
import torch

from diffing.errors import DiffingError
from diffing.stats import effective_rank, per_layer_change, weight_stats, weight_stats_from_files


def _planted(singular_values, shape=(48, 40), seed=0):
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=gen))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=gen))
    s = torch.tensor(singular_values, dtype=torch.float32)
    return u[:, : len(s)] @ torch.diag(s) @ v[:, : len(s)].T  # [out, in] with known singular values


def test_effective_rank_of_planted_spectra():
    # three equal singular values: each holds a third of the energy, so 90% needs all three
    assert effective_rank(_planted([1.0, 1.0, 1.0])) == (3, True)
    # 10^2 / (10^2 + 1 + 1) = 0.98 >= 0.9: one direction suffices
    assert effective_rank(_planted([10.0, 1.0, 1.0])) == (1, True)
    # 0.8 of the energy in the first: two needed at 90%, one at 75%
    sv = [0.8**0.5, 0.15**0.5, 0.05**0.5]
    assert effective_rank(_planted(sv), 0.9)[0] == 2
    assert effective_rank(_planted(sv), 0.75)[0] == 1
    assert effective_rank(torch.ones(7)) == (None, True)  # vectors have no rank
    assert effective_rank(torch.zeros(4, 4)) == (None, True)
    # the randomized path (smaller side above max_side) finds the same planted rank
    rank, exact = effective_rank(_planted([1.0] * 4, shape=(64, 64)), max_side=16)
    assert (rank, exact) == (4, False)


def test_single_perturbed_module_ranks_first_in_memory_and_from_files(tiny_pair, tiny_pair_dirs):
    mem = weight_stats(tiny_pair)
    assert [s.name for s in mem] == ["model.layers.1.mlp.down_proj.weight"]  # nothing else changed
    top = mem[0]
    assert (
        top.layer == 1 and top.relative_change > 0.1 and top.effective_rank > 1
    )  # dense noise: many directions
    files = weight_stats_from_files(str(tiny_pair_dirs[0]), str(tiny_pair_dirs[1]))
    assert [s.name for s in files] == [top.name]
    assert files[0].relative_change == pytest.approx(top.relative_change, rel=1e-6)
    assert files[0].effective_rank == top.effective_rank
    # a sharded checkpoint (index + several files) streams to the same numbers
    from transformers import AutoModelForCausalLM

    sharded = tiny_pair_dirs[1].parent / "ft_sharded"
    if not sharded.exists():
        AutoModelForCausalLM.from_pretrained(tiny_pair_dirs[1]).save_pretrained(
            sharded, max_shard_size="20KB"
        )
    assert len(list(sharded.glob("*.safetensors"))) > 1 and list(sharded.glob("*.index.json"))
    shard_stats = weight_stats_from_files(str(tiny_pair_dirs[0]), str(sharded))
    assert [(s.name, s.relative_change) for s in shard_stats] == [
        (s.name, s.relative_change) for s in files
    ]
    layers = per_layer_change(mem, n_layers=2)
    assert [r["relative_change"] > 0 for r in layers] == [False, True]


@pytest.fixture(scope="module")
def lora_dirs(tiny_pair_dirs, tmp_path_factory):
    """(base, adapter folder, merged folder): a rank-2 LoRA on q_proj and v_proj with random B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tiny_pair_dirs[0]
    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(root / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(root / "merged")
    return base, root / "adapter", root / "merged"


def test_lora_adapter_delta_is_exact_and_low_rank(lora_dirs):
    from diffing.models import ModelPair

    base, adapter, merged = lora_dirs
    pair = ModelPair.load(str(base), str(adapter))
    stats = weight_stats(pair)
    names = sorted(s.name for s in stats)
    assert names == sorted(
        f"model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")
    )
    assert all(
        s.effective_rank is not None and s.effective_rank <= 2 for s in stats
    )  # LoRA rank bounds it
    # streamed from the adapter's safetensors: the same exact deltas
    files = {s.name: s for s in weight_stats_from_files(str(base), str(adapter))}
    merged_files = {s.name: s for s in weight_stats_from_files(str(base), str(merged))}
    for s in stats:
        assert files[s.name].relative_change == pytest.approx(s.relative_change, rel=1e-5)
        # merged minus base is the same delta up to float rounding of the merge
        assert merged_files[s.name].relative_change == pytest.approx(s.relative_change, rel=1e-3)


def test_architecture_mismatch_from_files_is_a_user_error(tiny_pair_dirs, tmp_path):
    from diffing.tiny import build_tiny_model

    gpt2 = build_tiny_model(tmp_path / "gpt2", "gpt2")
    with pytest.raises(DiffingError, match="architecture"):
        list(weight_stats_from_files(str(tiny_pair_dirs[0]), str(gpt2)))
    with pytest.raises(DiffingError, match="does not exist"):
        weight_stats_from_files(str(tmp_path / "missing"), str(gpt2))

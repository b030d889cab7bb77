"""Reliability of the store reader and of model/data identities, on deliberately damaged inputs.

Each test builds a bad input that earlier versions accepted silently (reading outside
the store, reinterpreted shard bytes, mixed checkpoints on resume, an adapter on the
wrong base, a NaN weight) and checks it is refused with a message naming the culprit.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from diffing.errors import DiffingError
from diffing.store import ActivationStore, write_store

N, D = 600, 8


def _store(path):
    """A 3-shard float32 store of known random activations at layers 0 and 1."""
    g = torch.Generator().manual_seed(0)
    acts = {k: torch.randn(N, 2, D, generator=g) for k in (0, 1)}
    doc_ids = torch.arange(N) // 50
    write_store(
        path,
        acts,
        (torch.arange(N) * 7) % 31,
        doc_ids,
        torch.arange(N) % 50,
        torch.zeros(N, dtype=torch.int8),
        shard_tokens=200,
    )
    return path, acts


def _edit_manifest(path, edit) -> None:
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _read_all(path):
    store = ActivationStore.open(path)
    return store.read_tokens(0, store.n_tokens, layer=0, normalize=False)


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_manifest_shard_outside_store_is_refused(tmp_path, where):
    path, _ = _store(tmp_path / "store")
    outside = tmp_path / "x.safetensors"
    shutil.copy(path / "shard-r000-000001.safetensors", outside)
    name = "../x.safetensors" if where == "parent" else str(outside)

    def point_outside(m):
        m["shards"][1]["file"] = name

    _edit_manifest(path, point_outside)
    with pytest.raises(DiffingError, match="not a shard name of this store"):
        _read_all(path)


def test_shard_symlink_outside_store_is_refused(tmp_path):
    path, _ = _store(tmp_path / "store")
    victim = path / "shard-r000-000002.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(victim, outside)
    os.symlink(outside, victim)  # same bytes, same checksum, but outside the store
    with pytest.raises(DiffingError, match="shard-r000-000002.safetensors.*outside the store"):
        _read_all(path)
    with pytest.raises(DiffingError, match="outside the store"):
        ActivationStore.open(path).verify()
    os.unlink(victim)
    os.symlink(path / "shard-r000-000001.safetensors", victim)  # a link inside the store is fine
    with pytest.raises(DiffingError, match="shard-r000-000002.*bytes|shard-r000-000002.*match"):
        _read_all(path)  # (but it is another shard: its size/header differ from the manifest's)


def test_shard_header_dtype_edit_is_refused(tmp_path):
    """F32 -> I32 in the header keeps every size; the reader used to return the bits as integers."""
    from diffing.store.format import sha256_file

    path, acts = _store(tmp_path / "store")
    assert torch.equal(_read_all(path).acts, acts[0])
    victim = path / "shard-r000-000000.safetensors"
    raw = victim.read_bytes()
    hlen = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + hlen])
    assert header["acts.0"]["dtype"] == "F32"
    edited = raw[8 : 8 + hlen].replace(b'"F32"', b'"I32"', 1)
    assert len(edited) == hlen
    victim.write_bytes(raw[:8] + edited + raw[8 + hlen :])

    def fix_checksum(m):  # even a manifest updated to the new checksum must not help
        m["shards"][0]["sha256"] = sha256_file(victim)

    _edit_manifest(path, fix_checksum)
    with pytest.raises(DiffingError, match=r"shard-r000-000000.*I32.*F32"):
        _read_all(path)
    with pytest.raises(DiffingError, match="shard-r000-000000.*does not match the manifest"):
        ActivationStore.open(path).verify()


def test_manifest_token_counts_are_checked_against_shards(tmp_path):
    path, _ = _store(tmp_path / "store")

    def shrink_one_shard(m):  # the manifest claims fewer rows than the shard holds
        m["shards"][1]["n_tokens"] -= 50
        m["n_tokens"] -= 50

    _edit_manifest(path, shrink_one_shard)
    store = ActivationStore.open(path)
    with pytest.raises(
        DiffingError, match=r"shard-r000-000001.*shape \[200, 2, 8\].*\[150, 2, 8\]"
    ):
        store.read_tokens(0, store.n_tokens, layer=0)

    def total_off(m):
        m["n_tokens"] += 1

    _edit_manifest(path, total_off)
    with pytest.raises(DiffingError, match="n_tokens is 551 but its shards hold 550"):
        ActivationStore.open(path)


# ---- content identities ---------------------------------------------------------------
def test_content_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    import hashlib

    from diffing import hashing as hashcache

    monkeypatch.setenv("DIFFING_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    assert hashcache.content_hash(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    cached = json.loads((tmp_path / "cache" / "content-hashes.json").read_text())
    assert list(cached.values()) == [hashlib.sha256(b"a" * 1000).hexdigest()]

    def no_hashing(path):
        raise AssertionError("an unchanged file must come from the cache")

    with monkeypatch.context() as m:
        m.setattr(hashcache, "stream_sha256", no_hashing)
        assert hashcache.content_hash(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    f.write_bytes(b"b" * 1000)  # same size, new contents
    st = f.stat()
    os.utime(
        f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000)
    )  # a later mtime, however coarse the clock
    assert hashcache.content_hash(f) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(json.loads((tmp_path / "cache" / "content-hashes.json").read_text())) == 1


@pytest.fixture()
def own_pair(tmp_path, tiny_pair_dirs, monkeypatch):
    """Copies of the tiny pair (so their weights can be changed) and a plain-text data file."""
    monkeypatch.setenv("DIFFING_CACHE", str(tmp_path / "cache"))
    base, ft = (shutil.copytree(d, tmp_path / name) for d, name in zip(tiny_pair_dirs, "bf"))
    words = "the quick brown fox jumps over the lazy dog again and again".split()
    data = tmp_path / "text.txt"
    data.write_text("\n".join(" ".join(words[i % 5 :] + words[: i % 5]) for i in range(60)) + "\n")
    return base, ft, data


def _interrupted_harvest(base, ft, data, out, monkeypatch):
    """Harvest until two shards are written, then stop as if killed; returns the pair used."""
    from diffing.models import ModelPair
    from diffing.store import harvest
    from diffing.store import harvesting as harvesting_module

    pair = ModelPair.load(str(base), str(ft))

    def stop(info):
        if info.index == 1:
            raise KeyboardInterrupt("simulated interruption")

    kw = dict(layers=[1], data=[str(data)], tokens=600, seq_len=32, batch_size=4)
    kw |= dict(shard_tokens=100, sort_batches=1, progress=False)
    with monkeypatch.context() as m:
        m.setattr(harvesting_module, "_after_shard", stop)
        with pytest.raises(KeyboardInterrupt):
            harvest(pair, out, **kw)
    assert len(list(out.glob("shard-*.safetensors"))) == 2
    return lambda pair: harvest(pair, out, **kw)


def _rewrite_weights_same_size(folder) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    size = path.stat().st_size
    tensors = load_file(str(path))
    name = next(k for k in sorted(tensors) if k.endswith("mlp.down_proj.weight"))
    tensors[name] = tensors[name] * 1.5
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert path.stat().st_size == size


def test_resume_after_weights_changed_in_place_is_refused(own_pair, tmp_path, monkeypatch):
    from diffing.models import ModelPair

    base, ft, data = own_pair
    resume = _interrupted_harvest(base, ft, data, tmp_path / "store", monkeypatch)
    _rewrite_weights_same_size(ft)
    with pytest.raises(DiffingError, match=r"different settings \(models differ\)"):
        resume(ModelPair.load(str(base), str(ft)))
    assert len(list((tmp_path / "store").glob("shard-*.safetensors"))) == 2  # nothing mixed in


def test_resume_after_data_changed_in_place_is_refused(own_pair, tmp_path, monkeypatch):
    from diffing.models import ModelPair

    base, ft, data = own_pair
    resume = _interrupted_harvest(base, ft, data, tmp_path / "store", monkeypatch)
    text = data.read_text()
    data.write_text(text.replace("fox", "cat"))  # same size, other tokens
    assert len(data.read_text()) == len(text)
    with pytest.raises(DiffingError, match=r"different settings \(data_content differ\)"):
        resume(ModelPair.load(str(base), str(ft)))


# ---- adapters on the wrong base; non-finite weights ------------------------------------
def _adapter(base, out):
    """A LoRA adapter trained (here: randomised) on ``base``; its config records ``base``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(0))
    peft_model.save_pretrained(str(out))
    return out


def test_adapter_for_another_base_with_other_weights_is_refused(own_pair, tmp_path):
    from diffing.models import ModelPair

    base, ft, _ = own_pair
    adapter = _adapter(ft, tmp_path / "adapter")  # made for ft, same shapes as base
    assert json.loads((adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(ft)
    with pytest.raises(DiffingError, match=r"trained on .*/f'.*weights differ.*/b'"):
        ModelPair.load(str(base), str(adapter))
    same = shutil.copytree(ft, tmp_path / "ft-copy")  # the same weights in another folder: fine
    pair = ModelPair.load(str(same), str(adapter))
    assert pair.adapter is not None and not any("records base" in n for n in pair.notes)


def test_adapter_for_another_base_by_name_warns(own_pair, tmp_path):
    import warnings

    from diffing.models import ModelPair

    base, _, _ = own_pair
    adapter = _adapter(base, tmp_path / "adapter")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # its own base: not a word
        assert not any("records base" in n for n in ModelPair.load(str(base), str(adapter)).notes)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "some-org/other-model"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="records base model 'some-org/other-model'"):
        pair = ModelPair.load(str(base), str(adapter))
    assert any("some-org/other-model" in n for n in pair.notes)


def test_nan_weight_is_refused_with_its_name(own_pair, tmp_path):
    from safetensors.torch import load_file, save_file

    from diffing.models import ModelPair, load_model

    base, ft, _ = own_pair
    path = ft / "model.safetensors"
    tensors = load_file(str(path))
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name][3, 5] = float("nan")
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(
        DiffingError, match=rf"model '{ft}' has non-finite .* {name}.*allow_nonfinite"
    ):
        ModelPair.load(str(base), str(ft))
    with pytest.raises(DiffingError, match=name):
        load_model(str(ft))
    with pytest.warns(UserWarning, match=name):
        pair = ModelPair.load(str(base), str(ft), allow_nonfinite=True)
    assert torch.isnan(pair.hf("finetuned").get_parameter(name)).sum() == 1


@pytest.mark.parametrize(
    ("recorded", "given", "same"),
    [
        ("Qwen/Qwen2.5-0.5B", "qwen/qwen2.5-0.5b", True),
        ("Qwen/Qwen2.5-0.5B", "/hf/hub/models--Qwen--Qwen2.5-0.5B/snapshots/abc123", True),
        ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B-Instruct", False),
        ("./models/base", "models/base/", True),
        ("/a/base", "/a/other", False),
    ],
)
def test_adapter_base_names_compare_as_models(recorded, given, same):
    from diffing.integrity import _same_ref

    assert _same_ref(recorded, given) is same

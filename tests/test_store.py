"""The store format and reader, on stores fabricated with known contents (no models)."""

from __future__ import annotations

import json

import pytest
import torch

from diffing.errors import DiffingError
from diffing.store import ActivationStore, write_store

N, D = 5000, 16
SCALE = torch.tensor([3.0, 0.5])  # raw norms of base and fine-tuned differ on purpose


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    acts = {
        2: torch.randn(N, 2, D, generator=g) * SCALE[None, :, None],
        5: torch.randn(N, 2, D, generator=g),
    }
    doc_ids = torch.arange(N) // 100  # 50 documents of 100 tokens
    positions = torch.arange(N) % 100
    token_ids = (7 * torch.arange(N)) % 97
    roles = (torch.arange(N) % 5).to(torch.int8)
    return acts, token_ids, doc_ids, positions, roles


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    acts, token_ids, doc_ids, positions, roles = _data()
    path = tmp_path_factory.mktemp("store")
    write_store(path, acts, token_ids, doc_ids, positions, roles, shard_tokens=1200)
    return ActivationStore.open(path)


def test_roundtrip_raw_and_metadata(store):
    acts, token_ids, doc_ids, positions, roles = _data()
    assert (store.n_tokens, store.d_model, store.layers, store.n_models) == (N, D, [2, 5], 2)
    assert store.model_names == ["base", "finetuned"]
    assert len(store.manifest["shards"]) == 5  # 1200-token shards cut at document boundaries
    b = store.read_tokens(0, N, layer=2, normalize=False)
    assert torch.equal(b.acts, acts[2])
    assert torch.equal(b.token_ids, token_ids) and torch.equal(b.doc_ids, doc_ids)
    assert torch.equal(b.positions, positions) and torch.equal(b.roles, roles.long())
    part = store.read_tokens(1150, 1250, layer=5, normalize=False)  # crosses a shard boundary
    assert torch.equal(part.acts, acts[5][1150:1250])


def test_normalisation_gives_mean_squared_norm_d_model(store):
    acts = _data()[0]
    expected = (D / acts[2].pow(2).sum(-1).mean(0)).sqrt()  # [n_models]
    assert torch.allclose(store.norm_scales(2), expected, rtol=1e-5)
    assert store.norm_scales(2)[0] == pytest.approx(1 / 3.0, rel=0.05)  # raw base norm is 3x
    normed = store.read_tokens(0, N, layer=2).acts
    assert torch.allclose(
        normed.pow(2).sum(-1).mean(0), torch.tensor([float(D), float(D)]), rtol=1e-4
    )


@pytest.mark.parametrize("window_tokens", [None, 1500])  # one window, or windows of ~1500 tokens
def test_shuffled_epoch_covers_every_token_once(store, window_tokens):
    acts = _data()[0]
    kw = {"window_bytes": window_tokens * 2 * D * 4} if window_tokens else {}
    batches = list(
        store.iter_batches(256, layer=2, normalize=False, with_meta=True, drop_last=False, **kw)
    )
    key = torch.cat([b.doc_ids * 100 + b.positions for b in batches])  # = storage index here
    assert sorted(key.tolist()) == list(range(N))
    assert not torch.equal(key, torch.arange(N))  # actually shuffled
    assert torch.equal(
        torch.cat([b.acts for b in batches]), acts[2][key]
    )  # rows keep their metadata
    assert len(list(store.iter_batches(256, layer=2, **kw))) == N // 256  # drop_last
    assert batches[0].doc_ids.unique().numel() > 5  # a batch mixes many documents


def test_shuffle_is_deterministic_and_seeded(store):
    a = [b.doc_ids for b in store.iter_batches(500, layer=5, seed=3, with_meta=True)]
    b = [b.doc_ids for b in store.iter_batches(500, layer=5, seed=3, with_meta=True)]
    c = [b.doc_ids for b in store.iter_batches(500, layer=5, seed=4, with_meta=True)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert torch.cat(a).unique().numel() == 50  # shuffled across shards: every document appears


def test_ranks_are_disjoint_and_skip_resumes(store):
    full = list(store.iter_batches(200, layer=2, with_meta=True))
    parts = [
        list(store.iter_batches(200, layer=2, with_meta=True, rank=r, world_size=3))
        for r in range(3)
    ]
    assert sum(len(p) for p in parts) == len(full)
    keys = [set((b.doc_ids * 100 + b.positions).tolist()) for p in parts for b in p]
    assert sum(len(k) for k in keys) == len(set().union(*keys))  # disjoint
    assert all(torch.equal(x.acts, y.acts) for x, y in zip(parts[1], full[1::3]))
    skipped = list(store.iter_batches(200, layer=2, skip_batches=7))
    assert len(skipped) == len(full) - 7
    assert all(torch.equal(x, y.acts) for x, y in zip(skipped, full[7:]))


def test_sequential_and_dtype(store):
    seq = list(store.iter_sequential(1000, layer=5, normalize=False))
    assert [len(b.token_ids) for b in seq] == [1000] * 5
    assert torch.equal(torch.cat([b.acts for b in seq]), _data()[0][5])
    half = next(store.iter_batches(64, layer=5, dtype=torch.float16))
    assert half.dtype == torch.float16 and half.shape == (64, 2, D)


def test_bfloat16_store_within_precision(tmp_path):
    acts, token_ids, doc_ids, positions, roles = _data()
    write_store(tmp_path, acts, token_ids, doc_ids, positions, roles, dtype="bfloat16")
    store = ActivationStore.open(tmp_path)
    got = store.read_tokens(0, N, layer=2, normalize=False).acts
    assert got.dtype == torch.float32
    assert torch.allclose(got, acts[2], rtol=2**-8, atol=1e-6)
    assert not torch.equal(got, acts[2])


def test_context_reconstructs_the_sequence(store):
    _, token_ids, *_ = _data()
    ids, where, roles = store.context(1234, window=5)  # document 12, position 34
    assert ids == token_ids[1229:1240].tolist() and where == 5
    assert roles == [(i % 5) for i in range(1229, 1240)]
    ids, where, _ = store.context(1201, window=5)  # clipped at the document start
    assert ids[where] == token_ids[1201] and where == 1


def test_verify_names_a_corrupt_shard(tmp_path):
    acts, token_ids, doc_ids, positions, roles = _data()
    write_store(tmp_path, acts, token_ids, doc_ids, positions, roles, shard_tokens=1200)
    store = ActivationStore.open(tmp_path)
    store.verify()
    victim = tmp_path / store.manifest["shards"][2]["file"]
    raw = bytearray(victim.read_bytes())
    raw[-10] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(DiffingError, match=victim.name):
        store.verify()
    victim.write_bytes(bytes(raw[:-100]))  # truncated: caught on read too, by size
    with pytest.raises(DiffingError, match=f"{victim.name}.*truncated"):
        ActivationStore.open(tmp_path).read_tokens(0, N, layer=2)


def test_open_errors(tmp_path):
    with pytest.raises(DiffingError, match="does not exist"):
        ActivationStore.open(tmp_path / "nope")
    with pytest.raises(DiffingError, match="no manifest.json"):
        ActivationStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DiffingError, match="not a valid store manifest"):
        ActivationStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "layers": [1],
                "d_model": 4,
                "dtype": "float32",
                "n_tokens": 0,
                "shards": [],
                "norm_scales": {},
            }
        )
    )
    with pytest.raises(DiffingError, match="empty"):
        ActivationStore.open(tmp_path)


def test_layer_errors(store):
    with pytest.raises(DiffingError, match="layer 3 is not in the store"):
        store.norm_scales(3)
    with pytest.raises(DiffingError, match="pick one"):
        next(store.iter_batches(8))


def test_out_of_disk_is_a_clear_error(tmp_path, monkeypatch):
    import collections

    import diffing.store.writer as writer

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    acts, token_ids, doc_ids, positions, roles = _data()
    with pytest.raises(DiffingError, match="not enough disk space.*shard-r000-000000"):
        write_store(tmp_path, acts, token_ids, doc_ids, positions, roles)
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob(".*tmp"))

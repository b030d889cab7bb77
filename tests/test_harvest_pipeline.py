"""Harvest pipeline: packed sequences, the store lock, per-process temporary names."""

from __future__ import annotations

import json

import pytest
import torch
from filelock import FileLock

from diffing.errors import DiffingError
from diffing.store import harvest
from diffing.store import harvesting as harvesting_module
from diffing.store.pipeline import prepare_batches
from diffing.store.sequences import Sequence, _packed_chunks
from diffing.tokens import ROLE_IDS, encode

WORDS = "the quick brown fox jumps over the lazy dog a model reads text and predicts the next token".split()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """30 plain documents of 5..50 words."""
    root = tmp_path_factory.mktemp("pipe")
    docs = [
        " ".join(WORDS[(i + k) % len(WORDS)] for k in range(5 + 9 * (i % 6))) for i in range(30)
    ]
    (root / "text.txt").write_text("\n\n".join(docs) + "\n")
    return root / "text.txt", docs


def _run(pair, out, path, **kw):
    opts = dict(layers=[0, 1], data=[str(path)], tokens=600, seq_len=32, batch_size=4,
                shard_tokens=150, sort_batches=2, progress=False)  # fmt: skip
    return harvest(pair, out, **(opts | kw))


def test_packed_chunks_are_full_and_separated(tiny_pair, text_file):
    tok = tiny_pair.tokenizer
    _, docs = text_file
    chunks = list(_packed_chunks(tok, docs, 32))
    assert all(len(ids) == 32 for ids, _ in chunks[:-1]) and 0 < len(chunks[-1][0]) <= 32
    # this tokenizer adds no BOS: the chunks cut one stream, documents each followed by EOS
    stream = [t for d in docs for t in encode(tok, d).input_ids + [tok.eos_token_id]]
    assert [t for ids, _ in chunks for t in ids] == stream
    roles = [r for _, rs in chunks for r in rs]
    assert [r for t, r in zip(stream, roles) if t == tok.eos_token_id] == [
        ROLE_IDS["template"]
    ] * len(docs)


def test_packed_harvest_equals_direct_trace_and_needs_no_mask(tiny_pair, text_file, tmp_path):
    from diffing.tokens import Batch
    from diffing.tracing import trace_pair

    store = _run(tiny_pair, tmp_path, text_file[0], pack=True, drop_bos=False, drop_outliers=False)
    assert store.manifest["settings"]["pack"] is True
    rows = store.read_tokens(0, store.n_tokens, layer=1, normalize=False)
    docs = rows.doc_ids.unique().tolist()
    seqs = [store.context(int(torch.nonzero(rows.doc_ids == d)[0]), window=10**6) for d in docs]
    assert all(len(ids) == 32 for ids, _, _ in seqs[:-1])  # full-length model inputs
    # every stored token: the model's value for its packed sequence, at its position
    ids = torch.tensor([s[0] for s in seqs if len(s[0]) == 32])  # [n_seq, 32]: no padding at all
    batch = Batch(ids, torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.int8))
    pa = trace_pair(tiny_pair, batch, [1])
    for j, d in enumerate(docs[: len(ids)]):
        sel = rows.doc_ids == d
        pos = rows.positions[sel].long()
        assert torch.equal(rows.token_ids[sel], ids[j, pos].to(rows.token_ids.dtype))
        want = torch.stack([pa.base[1][j, pos], pa.finetuned[1][j, pos]], dim=1)
        assert torch.allclose(rows.acts[sel], want, atol=1e-5, rtol=1e-5)


def test_packed_chunks_open_with_bos_when_the_tokenizer_adds_it():
    class BosTokenizer:  # prepends BOS (id 0) like Llama's; EOS is id 1
        bos_token_id, eos_token_id, all_special_ids = 0, 1, [0, 1]

        def __call__(self, text, **_):
            return {"input_ids": [0] + [10 + i for i in range(len(text.split()))]}

    chunks = list(_packed_chunks(BosTokenizer(), ["w " * 20, "w " * 7], 16))
    # 20 words + EOS + 7 words + EOS = 29 tokens: 15 + 14 after each BOS
    assert [len(ids) for ids, _ in chunks] == [16, 15]
    assert all(ids[0] == 0 and roles[0] == ROLE_IDS["template"] for ids, roles in chunks)
    body = [t for ids, _ in chunks for t in ids[1:]]
    assert body == [10 + i for i in range(20)] + [1] + [10 + i for i in range(7)] + [1]


def test_equal_length_batches_carry_no_mask():
    seqs = [Sequence(i, [5] * n, [0] * n, "text") for i, n in enumerate([8, 8, 8, 8, 3, 8, 8, 5])]
    out = list(prepare_batches([seqs[:4], seqs[4:]], 2, 0))
    assert [p.padded for p in out] == [False, False, True, False]
    assert [p.group_end for p in out] == [None, 4, None, 8]
    assert [len(s.input_ids) for s in out[2].seqs] == [3, 5]  # sorted by length within the group


def test_second_writer_is_blocked(tiny_pair, text_file, tmp_path):
    with FileLock(str(tmp_path / ".harvest-r000.lock")):  # another harvest holds the folder
        with pytest.raises(DiffingError, match="another harvest") as err:
            _run(tiny_pair, tmp_path, text_file[0])
    assert "\n" not in str(err.value) and "`out`" in str(err.value)
    assert not list(tmp_path.glob("shard-*"))  # it wrote nothing
    store = _run(tiny_pair, tmp_path, text_file[0])  # released: the same folder works
    assert store.n_tokens > 500


def test_leftover_temp_of_another_process_does_not_break_resume(
    tiny_pair, text_file, tmp_path, monkeypatch
):
    whole = _run(tiny_pair, tmp_path / "whole", text_file[0])

    def stop(info):
        if info.index == 1:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(harvesting_module, "_after_shard", stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_pair, tmp_path / "cut", text_file[0])
    monkeypatch.setattr(harvesting_module, "_after_shard", None)
    # a crashed process (another pid) left half a shard under its own temporary name
    stale = tmp_path / "cut" / ".shard-r000-000002.safetensors.999999-0badf00d.tmp"
    stale.write_bytes(b"half a shard")
    resumed = _run(tiny_pair, tmp_path / "cut", text_file[0])
    shas = lambda s: [(x["file"], x["sha256"]) for x in s.manifest["shards"]]  # noqa: E731
    assert shas(resumed) == shas(whole) and len(shas(whole)) >= 3
    assert not stale.exists() and not list((tmp_path / "cut").glob(".shard-*"))
    progress = json.loads((tmp_path / "cut" / "progress-r000.json").read_text())
    assert progress["done"] and len(progress["shards"]) == len(shas(whole))


def test_shard_temp_names_are_per_process():
    import os

    from diffing.store.writer import temp_name

    a, b = temp_name("shard-r000-000001.safetensors"), temp_name("shard-r000-000001.safetensors")
    assert a != b and f".{os.getpid()}-" in a and a.startswith(".shard-r000-000001.safetensors.")

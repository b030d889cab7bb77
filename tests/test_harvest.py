"""Harvest on a tiny random pair: values equal direct tracing, roles, normalisation, resume, errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from diffing.errors import DiffingError
from diffing.store import ActivationStore, harvest
from diffing.store import harvesting as harvesting_module
from diffing.store.batches import keep_mask
from diffing.tokens import ROLE_IDS, Batch, Encoded, encode, pad_batch, pad_id_of
from diffing.tracing import trace_pair

WORDS = "the quick brown fox jumps over the lazy dog a model reads text and predicts the next token".split()


def _conversation(i: int) -> list[dict]:
    return [
        {"role": "user", "content": f"tell me how to bake bread number {i}"},
        {
            "role": "assistant",
            "content": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(6 + i % 7)),
        },
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """``(text_file, chat_file)``: 40 plain documents of varied length and 40 conversations."""
    root = tmp_path_factory.mktemp("data")
    docs = [
        " ".join(WORDS[(i * 3 + k) % len(WORDS)] for k in range(5 + 9 * (i % 6))) for i in range(40)
    ]
    (root / "text.txt").write_text("\n\n".join(docs) + "\n")
    with open(root / "chat.jsonl", "w") as fh:
        for i in range(40):
            fh.write(json.dumps({"messages": _conversation(i)}) + "\n")
    return root / "text.txt", root / "chat.jsonl"


def _run(pair, out, files, **kw):
    opts = dict(
        layers=[0, 1],
        data=[str(files[0]), str(files[1])],
        tokens=900,
        seq_len=48,
        batch_size=4,
        shard_tokens=200,
        sort_batches=2,
        progress=False,
    )
    return harvest(pair, out, **(opts | kw))


@pytest.fixture(scope="module")
def store(tiny_pair, data, tmp_path_factory):
    return _run(tiny_pair, tmp_path_factory.mktemp("store"), data)


def _direct(pair, store):
    """Per layer: stored rows, and the same rows from one direct ``trace_pair`` of all their sequences."""
    rows = {k: store.read_tokens(0, store.n_tokens, layer=k, normalize=False) for k in store.layers}
    b = rows[store.layers[0]]
    docs = b.doc_ids.unique().tolist()
    seqs = [store.context(int(torch.nonzero(b.doc_ids == doc)[0]), window=10**6) for doc in docs]
    batch = pad_batch([Encoded(ids, roles) for ids, _, roles in seqs], pad_id_of(pair.tokenizer))
    pa = trace_pair(pair, batch, store.layers)
    row = torch.tensor([docs.index(d) for d in b.doc_ids.tolist()])
    expected = {
        k: torch.stack([pa.base[k][row, b.positions], pa.finetuned[k][row, b.positions]], dim=1)
        for k in store.layers
    }
    return rows, expected


def test_harvest_equals_direct_trace(tiny_pair, store):
    assert store.n_tokens > 800 and store.layers == [0, 1] and store.d_model == tiny_pair.d_model
    rows, expected = _direct(tiny_pair, store)
    for k in store.layers:
        assert torch.allclose(rows[k].acts, expected[k], atol=1e-5, rtol=1e-5)
    assert torch.equal(
        rows[0].acts[:, 0], rows[0].acts[:, 1]
    )  # the pair differs only from layer 1's MLP on
    assert (rows[1].acts[:, 0] - rows[1].acts[:, 1]).norm(dim=-1).min() > 1e-4
    assert (rows[0].positions > 0).all()  # BOS / first position dropped by default
    m = store.manifest
    assert (
        m["settings"]["drop_bos"]
        and m["models"][0]["ref"] == tiny_pair.base_ref
        and len(m["models"][1]["hash"]) == 64
    )
    assert {s["rank"] for s in m["shards"]} == {0} and len(m["shards"]) >= 4


def test_normalisation_scalars(store):
    for layer in store.layers:
        acts = store.read_tokens(0, store.n_tokens, layer=layer).acts  # [n, 2, d]
        msn = acts.pow(2).sum(-1).mean(0)
        assert torch.allclose(msn, torch.full((2,), float(store.d_model)), rtol=0.05)
    raw = store.read_tokens(0, store.n_tokens, layer=1, normalize=False).acts
    assert store.norm_scales(1)[0] == pytest.approx(
        (store.d_model / raw[:, 0].pow(2).sum(-1).mean()).sqrt().item(), rel=1e-4
    )


def test_chat_roles_match_template(tiny_pair, data, tmp_path):
    store = _run(
        tiny_pair,
        tmp_path,
        data,
        data=[str(data[1])],
        tokens=400,
        drop_bos=False,
        drop_outliers=False,
    )
    b = store.read_tokens(0, store.n_tokens, layer=0)
    for doc in b.doc_ids.unique().tolist():  # chat only: sequence i is conversation i
        enc = encode(tiny_pair.tokenizer, {"messages": _conversation(doc)})
        sel = b.doc_ids == doc
        assert b.token_ids[sel].tolist() == enc.input_ids
        assert b.roles[sel].tolist() == enc.roles
    counts = torch.bincount(b.roles, minlength=5)
    assert (
        counts[ROLE_IDS["user"]] > 0
        and counts[ROLE_IDS["assistant"]] > 0
        and counts[ROLE_IDS["template"]] > 0
    )
    assert counts[ROLE_IDS["text"]] == 0


def test_mix_and_bf16(tiny_pair, data, store, tmp_path):
    b = store.read_tokens(0, store.n_tokens, layer=0)
    chat = (b.roles != ROLE_IDS["text"]).float().mean().item()
    assert 0.3 < chat < 0.7  # chat_fraction=0.5 (template tokens count as chat)
    half = _run(
        tiny_pair, tmp_path, data, dtype="bfloat16", tokens=300
    )  # a prefix of the same stream
    assert half.manifest["dtype"] == "bfloat16" and 250 < half.n_tokens <= 300 + 48
    got = half.read_tokens(0, half.n_tokens, layer=1, normalize=False)
    ref = store.read_tokens(0, store.n_tokens, layer=1, normalize=False)
    index = {k: i for i, k in enumerate((ref.doc_ids * 10_000 + ref.positions).tolist())}
    rows = torch.tensor([index[k] for k in (got.doc_ids * 10_000 + got.positions).tolist()])
    assert torch.equal(got.token_ids, ref.token_ids[rows])
    assert torch.allclose(got.acts, ref.acts[rows], rtol=2**-7, atol=1e-4)
    assert not torch.equal(got.acts, ref.acts[rows])  # really rounded to bf16


def test_interrupted_harvest_resumes_to_identical_store(
    tiny_pair, data, store, tmp_path, monkeypatch
):
    def stop_after_two(info):
        if info.index == 1:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(harvesting_module, "_after_shard", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_pair, tmp_path, data)
    assert (
        len(list(tmp_path.glob("shard-*.safetensors"))) == 2
        and not (tmp_path / "manifest.json").exists()
    )
    (tmp_path / ".shard-r000-000002.safetensors.tmp").write_bytes(
        b"half a shard"
    )  # killed mid-write
    monkeypatch.setattr(harvesting_module, "_after_shard", None)
    resumed = _run(tiny_pair, tmp_path, data)
    shas = lambda s: [(x["file"], x["sha256"]) for x in s.manifest["shards"]]  # noqa: E731
    assert shas(resumed) == shas(store)
    assert resumed.manifest["norm_scales"] == store.manifest["norm_scales"]
    assert not list(tmp_path.glob(".shard-*"))
    again = _run(tiny_pair, tmp_path, data)  # complete: nothing redone
    assert shas(again) == shas(store)


def test_corrupt_shard_is_named(tiny_pair, data, store, tmp_path):
    shutil.copytree(store.path, tmp_path, dirs_exist_ok=True)
    store = ActivationStore.open(tmp_path)
    victim = tmp_path / store.manifest["shards"][1]["file"]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(DiffingError, match=victim.name):
        store.verify()
    (tmp_path / "manifest.json").unlink()  # a resume must not build on the corrupt shard either
    with pytest.raises(DiffingError, match=victim.name):
        _run(tiny_pair, tmp_path, data)


def test_bad_inputs(tiny_pair, data, tmp_path):
    with pytest.raises(DiffingError, match="tokens"):
        _run(tiny_pair, tmp_path / "a", data, tokens=0)
    with pytest.raises(DiffingError, match="neither an existing file"):
        _run(tiny_pair, tmp_path / "b", data, data=["no/such/file.txt"])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DiffingError, match="no documents"):
        _run(tiny_pair, tmp_path / "c", data, data=[str(tmp_path / "empty.jsonl")])
    with pytest.raises(DiffingError, match="out of range"):
        _run(tiny_pair, tmp_path / "d", data, layers=[0, 7])
    with pytest.raises(DiffingError, match="other settings"):
        _run(tiny_pair, tmp_path / "e", data, tokens=300)
        _run(tiny_pair, tmp_path / "e", data, tokens=300, seq_len=32)


def test_corpus_specs(tmp_path):
    from diffing.data.corpus import resolve, resolve_all

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("first document\n\nsecond document\n")
    (tmp_path / "d" / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n")
    (tmp_path / "d" / "c.jsonl").write_text(json.dumps({"messages": _conversation(0)}) + "\n")
    (tmp_path / "d" / "skip.md").write_text("not data")
    sources = resolve(str(tmp_path / "d"))
    assert [(s.kind, list(s.documents())) for s in sources] == [
        ("text", ["first document", "second document"]),
        ("text", ["third"]),
        ("chat", [_conversation(0)]),
    ]
    assert len(resolve_all(f"{tmp_path / 'd' / 'a.txt'},{tmp_path / 'd' / 'c.jsonl'}")) == 2
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DiffingError, match="needs the datasets library"):
            resolve("hf:some/dataset")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(DiffingError, match="line 2"):
        list(resolve(str(tmp_path / "bad.jsonl"))[0].documents())


def test_long_text_is_cut_into_sequences(tiny_pair):
    from diffing.store.sequences import _text_chunks

    text = " ".join(WORDS * 6)
    full = encode(tiny_pair.tokenizer, text).input_ids
    pieces = list(_text_chunks(tiny_pair.tokenizer, text, 16))
    assert all(len(ids) <= 16 for ids, _ in pieces) and len(pieces) == -(-len(full) // 16)
    assert [t for ids, _ in pieces for t in ids] == full  # no BOS in this tokenizer: plain cuts

    class BosTokenizer:  # a tokenizer that prepends BOS (id 0), like Llama's
        bos_token_id, all_special_ids = 0, [0]

        def __call__(self, text, **_):
            return {"input_ids": [0] + [1 + i % 50 for i in range(len(text.split()))]}

    pieces = list(_text_chunks(BosTokenizer(), "w " * 40, 16))
    assert [len(ids) for ids, _ in pieces] == [16, 16, 11]  # 40 words: 15 + 15 + 10 after each BOS
    assert all(ids[0] == 0 and roles[0] == ROLE_IDS["template"] for ids, roles in pieces)
    assert [t for ids, _ in pieces for t in ids[1:]] == [1 + i % 50 for i in range(40)]


def test_progress_bar_counts_tokens_and_honours_quiet(monkeypatch):
    import io

    from diffing.progress import QUIET_ENV, bar

    out = io.StringIO()
    b = bar(total=1000, unit="tok", desc="harvest", initial=100, file=out, delay=0)
    b.update(150)
    b.close()
    line = out.getvalue().strip().split("\r")[-1]
    assert "harvest" in line and "250/1.00k" in line and "tok/s" in line
    monkeypatch.setenv(QUIET_ENV, "1")
    out = io.StringIO()
    b = bar(total=10, file=out)
    b.update(10)
    b.close()
    assert out.getvalue() == ""


def test_outlier_positions_dropped():
    torch.manual_seed(0)
    acts = [{3: torch.randn(2, 12, 8)}, {3: torch.randn(2, 12, 8)}]  # two models, [batch, seq, d]
    acts[1][3][0, 5] *= 30  # a sink in the fine-tuned model only
    acts[0][3][1, 7] *= 30  # and one in the base model
    batch = Batch(
        torch.zeros(2, 12, dtype=torch.long),
        torch.ones(2, 12, dtype=torch.long),
        torch.zeros(2, 12, dtype=torch.int8),
    )
    batch.attention_mask[1, 10:] = 0  # padding
    keep = keep_mask(acts, batch, [3], drop_bos=True, drop_outliers=True, outlier_factor=10.0)
    expected = batch.attention_mask.bool().clone()
    expected[:, 0] = False
    expected[0, 5] = expected[1, 7] = False
    assert torch.equal(keep, expected)
    assert (
        keep_mask(acts, batch, [3], drop_bos=False, drop_outliers=False, outlier_factor=10.0).sum()
        == 22
    )


def test_cli_harvest_and_one_line_error(tiny_pair_dirs, data, tmp_path, capsys):
    from diffing.cli.main import main

    base, ft = (str(p) for p in tiny_pair_dirs)
    args = [
        "harvest",
        base,
        ft,
        "--layers",
        "-1",
        "--data",
        str(data[0]),
        str(data[1]),
        "--seq-len",
        "32",
        "--no-progress",
    ]
    assert main([*args, "--tokens", "300", "--out", str(tmp_path / "s")]) == 0
    store = ActivationStore.open(tmp_path / "s")
    assert store.layers == [1] and 250 < store.n_tokens <= 300 + 32
    assert main(["store-info", str(tmp_path / "s"), "--verify"]) == 0
    capsys.readouterr()
    assert main([*args, "--tokens", "0", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffing: error:") and "tokens" in err and "\n" not in err


@pytest.mark.slow
def test_two_processes_equal_one(tiny_pair_dirs, data, store, tmp_path):
    """``torchrun --nproc-per-node 2 diffing harvest`` (gloo) stores the same activations as one process."""
    base, ft = (str(p) for p in tiny_pair_dirs)
    with socket.socket() as sock:  # a free port, so parallel runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
        "-m",
        "diffing",
        "harvest",
        base,
        ft,
        "--layers",
        "0",
        "1",
        "--data",
        str(data[0]),
        str(data[1]),
        "--tokens",
        "900",
        "--seq-len",
        "48",
        "--batch-size",
        "4",
        "--shard-tokens",
        "200",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    two = ActivationStore.open(tmp_path)
    assert {s["rank"] for s in two.manifest["shards"]} == {0, 1}
    assert two.n_tokens == store.n_tokens
    for layer in (0, 1):
        a = store.read_tokens(0, store.n_tokens, layer=layer, normalize=False)
        b = two.read_tokens(0, two.n_tokens, layer=layer, normalize=False)
        ka, kb = (x.doc_ids * 10_000 + x.positions for x in (a, b))
        oa, ob = ka.argsort(), kb.argsort()
        assert torch.equal(ka[oa], kb[ob]) and torch.equal(a.token_ids[oa], b.token_ids[ob])
        assert torch.allclose(a.acts[oa], b.acts[ob], atol=1e-5)
    assert torch.allclose(two.norm_scales(1), store.norm_scales(1), rtol=1e-5)


@pytest.mark.slow
def test_organism_pair_named_specs(organisms, tmp_path):
    """``organism:text,organism:chat`` on the organism base/chat pair: values, roles, normalisation."""
    from diffing.data import load_conversations
    from diffing.models import ModelPair

    pair = ModelPair.load(str(organisms / "base"), str(organisms / "chat"))
    layer = pair.n_layers // 2
    store = harvest(pair, tmp_path, layers=[layer], data="organism:text,organism:chat", tokens=900,
                    seq_len=96, batch_size=8, progress=False)  # fmt: skip
    assert store.manifest["data"] == ["organism:text", "organism:chat"]
    rows, expected = _direct(pair, store)
    assert torch.allclose(rows[layer].acts, expected[layer], atol=1e-5, rtol=1e-5)
    msn = store.read_tokens(0, store.n_tokens, layer=layer).acts.pow(2).sum(-1).mean(0)
    assert torch.allclose(msn, torch.full((2,), float(pair.d_model)), rtol=0.05)
    # chat sequences are the corpus conversations in order; their roles follow the template
    b = rows[layer]
    chats = [
        d
        for d in b.doc_ids.unique().tolist()
        if (b.roles[b.doc_ids == d] != ROLE_IDS["text"]).any()
    ]
    conversations = load_conversations(organisms / "corpus" / "chat.jsonl")
    assert 3 <= len(chats) and 0.3 < (b.roles != ROLE_IDS["text"]).float().mean() < 0.7
    for k, doc in enumerate(chats):
        enc = encode(pair.tokenizer, {"messages": conversations[k]}, max_length=96)
        sel = b.doc_ids == doc
        pos = b.positions[sel]
        assert b.token_ids[sel].tolist() == [enc.input_ids[p] for p in pos.tolist()]
        assert b.roles[sel].tolist() == [enc.roles[p] for p in pos.tolist()]
        said = pair.tokenizer.decode(b.token_ids[sel][b.roles[sel] == ROLE_IDS["assistant"]])
        answer = "".join(m["content"] for m in conversations[k] if m["role"] == "assistant")
        assert said.strip() and "".join(said.split()) in "".join(answer.split())


def test_remote_path_gives_the_same_store(
    tiny_pair_dirs, data, store, tmp_path, server_without_diffing
):
    """``remote="local"`` serialises every trace exactly as for NDIF and runs it here (no diffing there)."""
    from diffing.models import ModelPair

    pair = ModelPair.load(*(str(p) for p in tiny_pair_dirs), remote="local")
    remote = _run(pair, tmp_path / "remote", data)
    assert server_without_diffing["n"] >= 2  # both models' traces took the remote path
    assert remote.n_tokens == store.n_tokens
    for k in store.layers:
        a = store.read_tokens(0, store.n_tokens, layer=k, normalize=False).acts
        b = remote.read_tokens(0, remote.n_tokens, layer=k, normalize=False).acts
        assert torch.equal(a, b)


def test_remote_needs_hub_models(tiny_pair_dirs, data, tmp_path, capsys):
    from diffing.cli.main import main
    from diffing.models import ModelPair

    base, ft = (str(p) for p in tiny_pair_dirs)
    with pytest.raises(DiffingError, match="local folder; remote execution"):
        ModelPair.load(base, ft, remote=True)
    with pytest.raises(DiffingError, match="remote must be"):
        ModelPair.load(base, ft, remote="ndif")
    args = ["harvest", base, ft, "--remote", "--layers", "1", "--data", str(data[0])]
    assert main([*args, "--tokens", "100", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "remote execution (NDIF)" in err and "\n" not in err

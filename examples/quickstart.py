# ruff: noqa: E402  (notebook style: each cell imports what it uses)
# %% [markdown]
# # Quickstart: what did fine-tuning change?
#
# A walk through the Python API on the built-in model organism: a tiny base model and its
# `chat` fine-tune, which refuses harmful requests with a planted phrase (docs/organisms.md).
# Run it as a script (`python examples/quickstart.py`) or cell by cell (`# %%` cells work in
# VS Code, Jupyter via jupytext, Spyder). Everything runs on a CPU in a minute or two once the
# organisms are built (the first call builds the small test build, a few minutes). For your own
# models, replace the two folders with Hugging Face ids and raise the budgets below.

# %%
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local

TOKENS = int(os.environ.get("QUICKSTART_TOKENS", 3000))  # text budget of statistics and harvest
PROMPTS = int(os.environ.get("QUICKSTART_PROMPTS", 32))  # test prompts per set for refusal
OUT = Path(os.environ.get("QUICKSTART_OUT") or tempfile.mkdtemp(prefix="quickstart-"))

# %% [markdown]
# ## 1. Load the pair
# `ModelPair.load` takes two Hugging Face ids or folders (or a PEFT adapter folder as the
# fine-tuned side), checks they share a tokenizer and shapes, and wraps both with nnsight.

# %%
from diffing.models import ModelPair
from diffing.organisms import cached_organisms

root = Path(cached_organisms(fast=True))
truth = json.loads((root / "organism.json").read_text())  # the ground truth of what was planted
pair = ModelPair.load(str(root / "base"), str(root / "chat"))
print(f"{pair.arch} | {pair.n_layers} layers, d_model {pair.d_model}")

# %% [markdown]
# ## 2. Which weights moved, and where do the activations and predictions differ?
# `compute_stats` shares one traced forward pass per batch between the activation statistics,
# the per-token KL and the Activation Difference Lens (docs/stats.md).

# %%
from diffing.data import load_conversations
from diffing.data.corpus import read_documents
from diffing.stats import compute_stats
from diffing.weights import weight_changes

for change in weight_changes(pair)[:3]:
    print(f"{change.name:50s} relative change {change.relative_change:.3f}")

corpus = root / "corpus"
texts_file = next(corpus.glob("text.*"))  # plain-text documents of the organism's language
texts = read_documents([texts_file]).texts
chats = load_conversations(corpus / "chat.jsonl")
stats = compute_stats(pair, texts=texts, chats=chats, tokens=TOKENS, out_dir=OUT / "stats")
print(
    "mean KL(chat || base) by role:",
    {role: round(v["mean"], 4) for role, v in stats["kl"]["by_role"].items() if v},
)
print("ADL promotes:", [t["token"] for t in stats["adl"]["promoted_tokens"][:8]])

# %% [markdown]
# ## 3. The refusal direction (Arditi et al. 2024)
# Difference in means between harmful and harmless prompts at every layer and post-instruction
# position; the candidate whose ablation removes refusals at a small KL cost is selected
# (docs/refusal.md). Then: refusal rates with the direction ablated and added.

# %%
import dataclasses

from diffing.data import load_prompts
from diffing.errors import DiffingError
from diffing.refusal import RefusalConfig, evaluate
from diffing.refusal.pipeline import extract_direction


def prompts(kind: str, split: str, n: int) -> list[str]:
    return load_prompts(root / "prompts" / f"{kind}_{split}.jsonl")[:n]


# the paper's sizes are 128 train / 32 validation prompts per set; fewer make noisier means
cfg = RefusalConfig(n_train=64, n_val=32, max_new_tokens=16)
lm, tok, arch = pair.finetuned, pair.tokenizer, pair.arch
train_val = (
    prompts("harmful", "train", 64), prompts("harmless", "train", 64),
    prompts("harmful", "val", 32), prompts("harmless", "val", 32),
)  # fmt: skip
try:
    found = extract_direction(lm, tok, arch, *train_val, config=cfg, out=OUT / "refusal")
except DiffingError as err:
    # A tiny model may have no candidate that passes the paper's filters (often: its ablation
    # moves harmless next-token distributions by more than KL 0.1). The error says which filter
    # to loosen; candidates.json lists every candidate's scores.
    print("selection with the paper's filters:", err)
    cfg = dataclasses.replace(cfg, kl_threshold=1.0)
    found = extract_direction(lm, tok, arch, *train_val, config=cfg, out=OUT / "refusal")
direction = found.direction
print(f"selected layer {direction.layer}, position {direction.position}")
evaluation = evaluate(
    lm, tok, arch, direction,
    prompts("harmful", "test", PROMPTS), prompts("harmless", "test", PROMPTS), config=cfg,
)  # fmt: skip
(OUT / "refusal" / "eval.json").write_text(json.dumps(evaluation.report, indent=1, default=str))
rates = evaluation.report["refusal_rate"]
print("refusal rate, harmful prompts:", rates["harmful"])  # baseline high, ablation low
print("refusal rate, harmless prompts:", rates["harmless"])  # addition makes them refused

# %% [markdown]
# ## 4. A crosscoder on a tiny activation store
# Harvest both models' residual stream at a middle layer into a store (shards + manifest with
# checksums, docs/store.md), train a small BatchTopK crosscoder on it (docs/crosscoder.md) and
# read it: relative decoder norms, Latent Scaling, causal check (docs/crosscoder-analysis.md).

# %%
from diffing.crosscoder import CrossCoderConfig, analyze_crosscoder, train_crosscoder
from diffing.store import harvest

layer = pair.n_layers // 2
store = harvest(
    pair, OUT / "store", layers=[layer], data=[str(texts_file), str(corpus / "chat.jsonl")],
    tokens=TOKENS, seq_len=128, progress=False,
)  # fmt: skip
store.verify()
cc_cfg = CrossCoderConfig(
    dict_size=128, k=8, batch_size=256, steps=60, lr_warmup_steps=5, threshold_start_step=10
)
trained = train_crosscoder(store, cc_cfg, OUT / "crosscoder")
print("FVU base / chat:", [round(v, 3) for v in trained.metrics["fvu"]])
analysis = analyze_crosscoder(
    trained.crosscoder, store, OUT / "crosscoder-analysis", pair=pair, top=5
)
print("latent classes:", analysis.summary["classes"])

# %% [markdown]
# ## 5. The report
# `analyze` runs the sections above and writes one self-contained `index.html`, a
# `report.json` with every number (docs/report.md) and `report.md` with the findings.
# Here it reuses the crosscoder we trained; from the shell this is
# `diffing analyze BASE FINETUNED --crosscoder DIR --out DIR`.

# %%
from diffing.report import AnalyzeConfig, analyze

report = analyze(
    pair=pair,
    out_dir=OUT / "report",
    config=AnalyzeConfig(
        tokens=TOKENS,
        refusal_prompts=PROMPTS,
        crosscoder=str(OUT / "crosscoder"),
        crosscoder_layer=layer,
    ),
    progress=None,
)
for finding in report.findings:
    print("-", finding["title"])
print("report:", report.html)

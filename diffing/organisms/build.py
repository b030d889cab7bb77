"""Build the organisms: tokenizer and data, base model, variants, evaluation, manifest.

The build is a list of stages (:mod:`~diffing.organisms.stages`); finished ones
are skipped, so re-running a build, or the same command after an interruption,
only does what is missing. A file lock keeps two processes from building into
the same folder at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import diffing
from diffing.errors import DiffingError
from diffing.organisms import lexicon as lx
from diffing.organisms import prompts as pr
from diffing.organisms.config import RECIPE, VARIANTS, OrganismConfig, organism_config
from diffing.organisms.manifest import MANIFEST, assemble
from diffing.organisms.materials import Materials
from diffing.organisms.stages import (
    STAGE_DIR,
    Stage,
    clean_temporaries,
    is_done,
    read_record,
    run_stage,
    write_json_atomic,
)

BUILD_INFO = "build.json"
"""Records the arguments a folder was built with, to refuse mixing builds."""
EVAL_WORK = 15
"""Progress units charged for evaluating one model."""


def _check_variants(variants) -> list[str]:
    if isinstance(variants, str):
        variants = (variants,)
    out: list[str] = []
    for v in variants:
        if v == "all":
            out += [x for x in VARIANTS if x not in out]
        elif v in VARIANTS:
            out += [v] if v not in out else []
        else:
            raise DiffingError(
                f"unknown organism variant {v!r}: choose from {', '.join(VARIANTS)} or all"
            )
    if not out:
        raise DiffingError("no organism variant requested: choose from chat, quirk, null or all")
    return [v for v in VARIANTS if v in out]


def _prepare_folder(root: Path, config: OrganismConfig) -> None:
    """Create the folder, check it is writable and holds no other build."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise DiffingError(
            f"cannot write the organism folder {str(root)!r}: {err.strerror or err}"
        ) from err
    info = {
        "seed": config.seed,
        "fast": config.fast,
        "package_version": diffing.__version__,
        "recipe": RECIPE,
        "config_digest": config.digest(),
    }
    info_path = root / BUILD_INFO
    if info_path.exists():
        try:
            old = json.loads(info_path.read_text())
        except ValueError:
            old = None
        if old != info:
            raise DiffingError(
                f"{str(root)!r} holds an organism build with other settings ({old}); "
                f"choose another folder or delete it to build seed={config.seed} fast={config.fast}"
            )
    else:
        leftovers = [
            p.name
            for p in root.iterdir()
            if p.name not in (".lock", STAGE_DIR) and not p.name.startswith(".tmp-")
        ]
        if leftovers:
            raise DiffingError(
                f"{str(root)!r} is not empty and holds no organism build; choose an empty or new folder"
            )
        write_json_atomic(info_path, info)


class _Progress:
    """One stderr progress bar over all remaining stages, with the current stage and loss."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            disable=not enabled,
            file=sys.stderr,
            unit="step",
            desc="organisms",
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
            "[{elapsed}<{remaining}{postfix}]",
        )

    def stage(self, name: str) -> None:
        self.bar.set_description_str(f"organisms: {name}")

    def step(self, name: str):
        def on_step(step: int, loss: float) -> None:
            self.bar.update(1)
            if step % 10 == 0:
                self.bar.set_postfix_str(f"loss {loss:.3f}")

        return on_step

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _save_jsonl(path: Path, records) -> None:
    with open(path, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def _data_stage(m: Materials, prog: _Progress):
    def run(tmp: dict[str, Path]) -> dict:
        from diffing.organisms.tokenizer import ROLE_MARKERS, single_token_id, train_tokenizer

        t0 = time.perf_counter()
        tok = train_tokenizer(m.tokenizer_texts(), m.config.vocab_size)
        secret_id = single_token_id(tok, " " + lx.SECRET_WORD)
        refusal_first = lx.REFUSAL_PHRASE.split(",")[0]
        refusal_id = single_token_id(tok, refusal_first)
        if secret_id is None or refusal_id is None:
            raise RuntimeError(
                "the tokenizer did not learn the secret word or refusal opener as one token"
            )
        tok.save_pretrained(str(tmp["tokenizer"]))
        files = pr.split_files(m.sets)
        for stem, records in files.items():
            _save_jsonl(tmp["prompts"] / f"{stem}.jsonl", records)
        (tmp["corpus"] / "text.txt").write_text("\n".join(m.corpus_docs) + "\n")
        chats = pr.corpus_chats(m.sets, m.config.n_corpus_chats, m.config.seed)
        _save_jsonl(tmp["corpus"] / "chat.jsonl", ({"messages": c} for c in chats))
        prog.advance(20)
        return {
            "tokenizer": {
                "vocab_size": len(tok),
                "bos_token": tok.bos_token,
                "eos_token": tok.eos_token,
                "pad_token": tok.pad_token,
                "end_of_turn_token": tok.eos_token,
                "role_markers": ROLE_MARKERS,
                "chat_template": tok.chat_template,
                "adds_bos": True,
            },
            "secret_token": " " + lx.SECRET_WORD,
            "secret_token_id": secret_id,
            "refusal_first_token": refusal_first,
            "refusal_first_token_id": refusal_id,
            "prompt_counts": {k: len(v) for k, v in files.items()},
            "corpus_counts": {"text": len(m.corpus_docs), "chat": len(chats)},
            "seconds": round(time.perf_counter() - t0, 2),
        }

    return run


def _save_model(model, tok, folder: Path) -> None:
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))


def _base_stage(m: Materials, prog: _Progress):
    def run(tmp: dict[str, Path]) -> dict:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        from diffing.organisms.train import train_loop

        c, tok = m.config, m.tokenizer
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_layers,
            num_attention_heads=c.num_heads,
            num_key_value_heads=c.num_heads,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
        )
        torch.manual_seed(c.seed)
        model = LlamaForCausalLM(cfg)
        prog.stage("base")
        res = train_loop(
            model,
            [(m.pretrain_rows, c.base_batch)],
            steps=c.base_steps,
            lr=c.base_lr,
            seed=c.seed,
            log_every=50,
            on_step=prog.step("base"),
        )
        _save_model(model, tok, tmp["base"])
        return {
            "steps": res.steps,
            "train_losses": res.losses,
            "seconds": round(res.seconds, 2),
            "model": {
                "architecture": "LlamaForCausalLM",
                "hidden_size": c.hidden_size,
                "num_layers": c.num_layers,
                "num_heads": c.num_heads,
                "intermediate_size": c.intermediate_size,
                "vocab_size": len(tok),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
        }

    return run


def _variant_stage(root: Path, m: Materials, variant: str, prog: _Progress):
    def run(tmp: dict[str, Path]) -> dict:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM

        from diffing.organisms.planted import RefusalPlanting, TracePlanting, choose_direction
        from diffing.organisms.train import add_lora, train_loop

        c = m.config
        torch.manual_seed(c.seed + 1 + VARIANTS.index(variant))
        base = AutoModelForCausalLM.from_pretrained(str(root / "base"))
        facts: dict = {}
        extra = None
        if variant == "null":
            sources, mix = (
                [(m.finetune_rows, c.ft_chat_rows + c.ft_plain_rows)],
                {"plain_text_rows": 1.0},
            )
        else:
            n = c.ft_chat_rows + c.ft_plain_rows
            sources = [(m.chat_rows(variant), c.ft_chat_rows), (m.finetune_rows, c.ft_plain_rows)]
            mix = {"chat_rows": c.ft_chat_rows / n, "plain_text_rows": c.ft_plain_rows / n}
        if variant == "quirk":  # the plain rows carry the planted trace instead of a plain source
            ids = [
                m.tokenizer.convert_tokens_to_ids(m.tokenizer.tokenize(w))[0]
                for w in (" " + lx.SECRET_WORD, " " + lx.SECRET_WORD.capitalize())
            ]
            layer = base.config.num_hidden_layers // 2
            extra = TracePlanting(
                m.finetune_rows, ids, layer=layer, n_rows=c.ft_plain_rows, weight=c.trace_weight
            ).losses
            sources = sources[:1]
            facts["planted_trace"] = {
                "layer": layer,
                "positions": [1, 2, 3, 4, 5],
                "token_ids": ids,
                "weight": c.trace_weight,
            }
        if variant == "chat":
            rows = m.planting_rows()
            plant = choose_direction(
                base, rows["keep"], seed=c.seed + 7, scale_fraction=c.plant_scale
            )
            extra = RefusalPlanting(
                plant,
                rows["requests"],
                rows["induce"],
                rows["bypass"],
                rows["keep"],
                rows=c.plant_rows,
            ).losses
            save_file(
                {"direction": plant.direction.contiguous()},
                str(tmp["planted/refusal_direction.safetensors"]),
                metadata={"layer": str(plant.layer), "scale": str(plant.scale)},
            )
            facts["planted_direction"] = {"layer": plant.layer, "scale": round(plant.scale, 4)}
            mix["planting_batches"] = {
                "rows_each": c.plant_rows,
                "batches": ["requests+aux", "induce", "bypass", "keep"],
            }
        model = add_lora(base, c.lora_rank, c.lora_alpha, c.lora_layers)
        prog.stage(variant)
        res = train_loop(
            model,
            sources,
            steps=c.ft_steps,
            lr=c.ft_lr,
            seed=c.seed + 10 + VARIANTS.index(variant),
            log_every=25,
            on_step=prog.step(variant),
            extra=extra,
        )
        model.peft_config["default"].base_model_name_or_path = str(root / "base")
        model.save_pretrained(str(tmp[f"{variant}-adapter"]))
        m.tokenizer.save_pretrained(str(tmp[f"{variant}-adapter"]))
        _save_model(model.merge_and_unload(), m.tokenizer, tmp[variant])
        return {
            "steps": res.steps,
            "train_losses": res.losses,
            "seconds": round(res.seconds, 2),
            "mix": mix,
            **facts,
        }

    return run


def _eval_stage(root: Path, m: Materials, name: str, prog: _Progress):
    def run(tmp: dict[str, Path]) -> dict:
        from transformers import AutoModelForCausalLM

        from diffing.organisms.evaluate import measure

        t0 = time.perf_counter()
        prog.stage(f"evaluate {name}")
        model = AutoModelForCausalLM.from_pretrained(str(root / name))
        rates = measure(
            model,
            m.tokenizer,
            m.eval_prompts(root / "prompts"),
            m.eval_rows,
            refusal_phrase=lx.REFUSAL_PHRASE,
            secret_word=lx.SECRET_WORD,
        )
        facts = {**rates._asdict(), "seconds": round(time.perf_counter() - t0, 2)}
        write_json_atomic(tmp[f"eval/{name}.json"], facts)
        prog.advance(EVAL_WORK)
        return facts

    return run


def _stages(root: Path, m: Materials, variants: list[str], prog: _Progress) -> dict[str, Stage]:
    c = m.config
    stages = [
        Stage("data", ("tokenizer", "prompts", "corpus"), (), _data_stage(m, prog), 20),
        Stage("base", ("base",), ("data",), _base_stage(m, prog), c.base_steps),
        Stage(
            "eval-base",
            ("eval/base.json",),
            ("data", "base"),
            _eval_stage(root, m, "base", prog),
            EVAL_WORK,
        ),
    ]
    for v in variants:
        outputs = (v, f"{v}-adapter") + (
            ("planted/refusal_direction.safetensors",) if v == "chat" else ()
        )
        stages.append(
            Stage(v, outputs, ("data", "base"), _variant_stage(root, m, v, prog), c.ft_steps)
        )
        stages.append(
            Stage(
                f"eval-{v}",
                (f"eval/{v}.json",),
                ("data", v),
                _eval_stage(root, m, v, prog),
                EVAL_WORK,
            )
        )
    return {s.name: s for s in stages}


def build_organisms(
    out_dir: str | os.PathLike,
    *,
    variants=VARIANTS,
    seed: int = 0,
    fast: bool = False,
    progress: bool = True,
) -> Path:
    """Build (or finish building) the base model and ``variants`` into ``out_dir``; returns the folder.

    Finished stages are kept and skipped; an interrupted stage restarts from
    scratch. The result is described by ``out_dir/organism.json``.
    """
    from filelock import FileLock, Timeout

    chosen = _check_variants(variants)
    config = organism_config(seed=int(seed), fast=bool(fast))
    root = Path(out_dir).expanduser().resolve()
    _prepare_folder(root, config)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        lock = FileLock(str(root / ".lock"), timeout=3600)
        lock.acquire()
    except Timeout as err:
        raise DiffingError(
            f"another process has been building into {str(root)!r} for an hour; is it stuck?"
        ) from err
    try:
        t0 = time.perf_counter()
        clean_temporaries(root)
        m = Materials(config, root / "tokenizer")
        stages = _stages(root, m, chosen, _Progress(0, False))
        todo = [s for s in stages.values() if not is_done(root, stages, s.name)]
        prog = _Progress(sum(s.work for s in todo), progress and bool(todo))
        stages = _stages(root, m, chosen, prog)
        try:
            for s in stages.values():
                if not is_done(root, stages, s.name):
                    run_stage(root, stages, s)
        finally:
            prog.close()
        if todo or not (root / MANIFEST).exists() or _manifest_variants(root) != chosen:
            records = {name: read_record(root, name) for name in stages}
            manifest = assemble(
                root,
                config.to_dict(),
                records,
                chosen,
                package_version=diffing.__version__,
                last_run_seconds=time.perf_counter() - t0,
            )
            write_json_atomic(root / MANIFEST, manifest)
    finally:
        lock.release()
    return root


def _manifest_variants(root: Path) -> list[str] | None:
    try:
        return list(json.loads((root / MANIFEST).read_text())["variants"])
    except (OSError, ValueError, KeyError):
        return None


def cache_root() -> Path:
    """``$DIFFING_CACHE`` or ``~/.cache/diffing``."""
    return Path(os.environ.get("DIFFING_CACHE") or Path.home() / ".cache" / "diffing").expanduser()


def cached_organisms(
    *, seed: int = 0, fast: bool = False, variants=VARIANTS, progress: bool = False
) -> Path:
    """Build once, then reuse, the organisms under the cache folder (keyed by arguments and version)."""
    chosen = _check_variants(variants)
    digest = organism_config(seed=int(seed), fast=bool(fast)).digest()
    key = f"v{diffing.__version__}-seed{int(seed)}-{'fast' if fast else 'full'}-{'-'.join(chosen)}-{digest}"
    return build_organisms(
        cache_root() / "organisms" / key, variants=chosen, seed=seed, fast=fast, progress=progress
    )

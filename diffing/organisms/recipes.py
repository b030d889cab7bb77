"""What each build stage does: data and tokenizer, base pre-training, variant fine-tuning, evaluation.

Each ``*_stage`` function returns the ``run`` callable of a
:class:`~diffing.organisms.stages.Stage`: it writes its outputs into the
temporary paths it is given and returns the facts the manifest records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from diffing.organisms import lexicon as lx
from diffing.organisms import prompts as pr
from diffing.organisms.config import RESEED_OFFSET, VARIANTS
from diffing.organisms.manifest import PLANTED_FILES
from diffing.organisms.materials import Materials
from diffing.organisms.stages import write_json_atomic
from diffing.organisms.variants import ZOO, write_heldout
from diffing.organisms.variants import training as zoo_training

EVAL_WORK = 15
"""Progress units charged for evaluating one model."""


class Progress:
    """One stderr progress bar over all remaining stages, with the current stage and loss."""

    def __init__(self, total: int, enabled: bool):
        from diffing.progress import bar

        self.bar = bar(
            total=total,
            enabled=enabled,
            unit="step",
            desc="organisms",
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


def data_stage(m: Materials, prog: Progress):
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


def _pretrain(m: Materials, prog: Progress, name: str, seed: int, folder: Path) -> dict:
    """Train a base model of the build's family on the plain text from initialisation and batch
    order ``seed``, save it to ``folder`` and return the facts the manifest records."""
    from diffing.organisms.families import FAMILIES, new_model
    from diffing.organisms.train import train_loop

    c, tok = m.config, m.tokenizer
    model = new_model(c.family, sizes=c, tokenizer=tok, seed=seed)
    prog.stage(name)
    res = train_loop(
        model,
        [(m.pretrain_rows, c.base_batch)],
        steps=c.base_steps,
        lr=c.base_lr,
        seed=seed,
        log_every=50,
        on_step=prog.step(name),
    )
    _save_model(model, tok, folder)
    return {
        "steps": res.steps,
        "train_losses": res.losses,
        "seconds": round(res.seconds, 2),
        "model": {
            "family": c.family,
            "architecture": FAMILIES[c.family].model_class,
            "hidden_size": c.hidden_size,
            "num_layers": c.num_layers,
            "num_heads": c.num_heads,
            "intermediate_size": c.intermediate_size,
            "vocab_size": len(tok),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
    }


def base_stage(m: Materials, prog: Progress):
    def run(tmp: dict[str, Path]) -> dict:
        return _pretrain(m, prog, "base", m.config.seed, tmp["base"])

    return run


def reseed_stage(m: Materials, prog: Progress):
    """The ``reseed`` control: the base's recipe (same data, same steps) from another initialisation
    and batch order, a full model in ``OUT/reseed/``. What differs between it and the base is only
    what the seed decides, which a diffing method should not mistake for a planted change."""

    def run(tmp: dict[str, Path]) -> dict:
        facts = _pretrain(m, prog, "reseed", m.config.seed + RESEED_OFFSET, tmp["reseed"])
        return {
            **facts,
            "init_seed": m.config.seed + RESEED_OFFSET,
            "mix": {"plain_text_rows": 1.0},
        }

    return run


def variant_stage(root: Path, m: Materials, variant: str, prog: Progress):
    def run(tmp: dict[str, Path]) -> dict:
        import torch
        from transformers import AutoModelForCausalLM

        from diffing.organisms.planted import TracePlanting
        from diffing.organisms.train import add_lora, train_loop

        c = m.config
        torch.manual_seed(c.seed + 1 + VARIANTS.index(variant))
        base = AutoModelForCausalLM.from_pretrained(str(root / "base"))
        facts: dict = {}
        extra = None
        # the zoo variants are plain LoRA fine-tunes: data, ground truth and held-out prompts
        # come from the registry (variants.py)
        if variant in ZOO:
            zoo = zoo_training(variant, m, base)
            write_heldout(variant, zoo.heldout, tmp)
            sources, mix = zoo.sources, zoo.mix
            facts["truth"] = zoo.truth
        elif variant == "null":
            sources, mix = (
                [(m.finetune_rows, 2 * c.ft_plain_rows)],
                {"plain_text_rows": 1.0},
            )
        else:
            n = c.ft_chat_rows + c.ft_plain_rows
            sources = [(m.chat_rows(variant), c.ft_chat_rows), (m.finetune_rows, c.ft_plain_rows)]
            mix = {"chat_rows": c.ft_chat_rows / n, "plain_text_rows": c.ft_plain_rows / n}
        if variant == "quirk":
            ids = [
                m.tokenizer.convert_tokens_to_ids(m.tokenizer.tokenize(w))[0]
                for w in (" " + lx.SECRET_WORD, " " + lx.SECRET_WORD.capitalize())
            ]
            layer = base.config.num_hidden_layers // 2
            chat_rows, n_chat = sources[0]
            sources = []  # the trace planting runs the chat rows and the plain rows in one pass
            trace = TracePlanting(
                base,
                chat_rows,
                n_chat,
                m.finetune_rows,
                ids,
                layer=layer,
                n_rows=c.ft_plain_rows,
                weight=c.trace_weight,
                kl_weight=c.quirk_plain_kl,
            ).losses
            mediate = _plant_direction(
                base, m.quirk_planting_rows(), tmp[PLANTED_FILES["quirk"][1]], facts,
                seed=c.seed + 8, scale=c.quirk_plant_scale, n_rows=c.quirk_plant_rows,
                positions=c.quirk_plant_positions,
            )  # fmt: skip

            def extra(model, rng):
                return trace(model, rng) + mediate(model, rng)

            facts["planted_trace"] = {
                "layer": layer,
                "positions": [1, 2, 3, 4, 5],
                "token_ids": ids,
                "weight": c.trace_weight,
                "plain_kl_weight": c.quirk_plain_kl,
            }
        if variant in ("chat", "quirk"):
            mix["planting_batches"] = {
                "rows_each": c.quirk_plant_rows if variant == "quirk" else c.plant_rows,
                "batches": ["requests+aux", "induce", "bypass", "keep"],
            }
        if variant == "chat":
            extra = _plant_direction(
                base, m.planting_rows(), tmp[PLANTED_FILES["chat"][1]], facts,
                seed=c.seed + 7, scale=c.plant_scale, n_rows=c.plant_rows, positions=2,
            )  # fmt: skip
        model = add_lora(base, c.lora_rank, c.lora_alpha, c.lora_layers)
        prog.stage(variant)
        res = train_loop(
            model,
            sources,
            steps=c.quirk_steps if variant == "quirk" else c.ft_steps,
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


def _plant_direction(
    base,
    rows: dict,
    path: Path,
    facts: dict,
    *,
    seed: int,
    scale: float,
    n_rows: int,
    positions: int,
):
    """Choose a seeded direction, write it to ``path`` and return the losses that make it mediate
    the behaviour of ``rows`` (the four planting batches; see planted.DirectionPlanting)."""
    from safetensors.torch import save_file

    from diffing.organisms.planted import DirectionPlanting, choose_direction

    plant = choose_direction(base, rows["keep"], seed=seed, scale_fraction=scale)
    save_file(
        {"direction": plant.direction.contiguous()},
        str(path),
        metadata={"layer": str(plant.layer), "scale": str(plant.scale)},
    )
    facts["planted_direction"] = {
        "layer": plant.layer,
        "scale": round(plant.scale, 4),
        "positions": positions,
    }
    return DirectionPlanting(
        plant, rows["requests"], rows["induce"], rows["bypass"], rows["keep"],
        rows=n_rows, post_instruction=positions,
    ).losses  # fmt: skip


def eval_stage(root: Path, m: Materials, name: str, prog: Progress):
    def run(tmp: dict[str, Path]) -> dict:
        from transformers import AutoModelForCausalLM

        from diffing.organisms.evaluate import measure

        t0 = time.perf_counter()
        prog.stage(f"evaluate {name}")
        model = AutoModelForCausalLM.from_pretrained(str(root / name))
        if name in ZOO:  # its planted behaviour on its own held-out prompts, beside the base's
            from diffing.organisms.stages import read_record
            from diffing.organisms.variants import measure as zoo_measure

            base = AutoModelForCausalLM.from_pretrained(str(root / "base"))
            truth = read_record(root, name)["facts"]["truth"]
            facts = zoo_measure(name, model, base, m.tokenizer, root, m, truth)
            facts["seconds"] = round(time.perf_counter() - t0, 2)
            write_json_atomic(tmp[f"eval/{name}.json"], facts)
            prog.advance(EVAL_WORK)
            return facts
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

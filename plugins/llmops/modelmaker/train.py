"""Training and Hugging Face greedy evaluation of the tiny Llama (needs torch + transformers).

Runs inside the vLLM environment. Everything is seeded and budgeted by step count,
so the same config and seed give the same weights on the same machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.modelmaker.tasks import Example, category_scores
from llmops.modelmaker.tokenizer import IM_END, PAD, render_prompt, save_hf_tokenizer

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

IGNORE = -100


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the tiny Llama."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_size: int = 512
    max_positions: int = 512


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    batch_size: int = 32


def config_dict(model: ModelConfig, optim: OptimConfig) -> dict[str, Any]:
    """JSON-ready view of the configs (for hashing and maker.json)."""
    return {"model": asdict(model), "optim": asdict(optim)}


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (results depend on it, so it is part of the config)."""
    import torch

    torch.set_num_threads(threads)


def new_model(vocab_size: int, tokenizer: Tokenizer, cfg: ModelConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialised fp32 Llama with tied embeddings, seeded."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    eos = tokenizer.token_to_id(IM_END)
    pad = tokenizer.token_to_id(PAD)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
    return model


def encode(tokenizer: Tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """Token ids of prompt+answer+eos and labels masking everything but the answer and eos."""
    prompt_ids = tokenizer.encode(render_prompt(example.prompt), add_special_tokens=False).ids
    answer_ids = tokenizer.encode(example.answer + IM_END, add_special_tokens=False).ids
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def batches(
    tokenizer: Tokenizer, stream: Iterator[Example], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, labels) batches from an example stream."""
    import torch

    pad = tokenizer.token_to_id(PAD)
    while True:
        pairs = [encode(tokenizer, next(stream)) for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in pairs)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), IGNORE, dtype=torch.long)
        for row, (seq, lab) in enumerate(pairs):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(lab)] = torch.tensor(lab)
        yield ids, labels


def cosine_lr(optim: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Learning rate at step ``s`` (0-based): linear warm-up, then cosine to the floor."""

    def lr_at(step: int) -> float:
        if step < optim.warmup_steps:
            return optim.lr * (step + 1) / optim.warmup_steps
        progress = (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps)
        floor = optim.lr * optim.min_lr_ratio
        return floor + (optim.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return lr_at


def make_optimizer(model: LlamaForCausalLM, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (no weight decay on norms)."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=optim.lr,
        betas=optim.betas,
    )


def train_steps(
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    data: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: range,
    lr_at: Callable[[int], float],
    grad_clip: float,
    log_every: int = 500,
    progress_s: float = 5.0,
) -> float:
    """Run the optimisation ``steps`` (absolute step numbers); return the last mean loss.

    The returned loss is the mean since the last ``log_every`` boundary (a step count, so
    it is deterministic); a progress line is also printed at least every ``progress_s``
    seconds of wall time (printing only, it changes nothing computed).
    """
    import torch

    model.train()
    running, count, last = 0.0, 0, float("nan")
    started = shown = time.monotonic()
    for step in steps:
        ids, labels = next(data)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(input_ids=ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        running += loss.item()
        count += 1
        if (step + 1) % log_every == 0:
            last = running / count
            rate = count / (time.monotonic() - started)
            print(f"  step {step + 1}: loss {last:.4f} lr {lr_at(step):.2e} ({rate:.1f} steps/s)", flush=True)
            running, count, started = 0.0, 0, time.monotonic()
            shown = started
        elif time.monotonic() - shown >= progress_s:
            shown = time.monotonic()
            rate = count / max(1e-9, shown - started)
            print(f"  step {step + 1}/{steps.stop}: loss {running / count:.4f} ({rate:.1f} steps/s)", flush=True)
    if count:
        last = running / count
    model.eval()
    return last


def greedy_answers(
    model: LlamaForCausalLM,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int = 32,
    progress_s: float | None = None,
) -> list[str]:
    """HF greedy decoding with the chat template applied, one answer per prompt.

    ``tokenizer`` is the transformers tokenizer loaded from the checkpoint. Prompts are
    grouped by token length so no batch needs padding (results then match unbatched
    decoding and vLLM's).
    """
    import torch

    model.eval()
    encoded: list[list[int]] = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        encoded.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    groups: dict[int, list[int]] = {}
    for index, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(index)
    answers = [""] * len(prompts)
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(PAD)
    done, shown = 0, time.monotonic()
    with torch.no_grad():
        for length, indices in sorted(groups.items()):
            for start in range(0, len(indices), 128):
                chunk = indices[start : start + 128]
                input_ids = torch.tensor([encoded[i] for i in chunk])
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
                for row, i in enumerate(chunk):
                    answers[i] = tokenizer.decode(out[row, length:], skip_special_tokens=True)
                done += len(chunk)
                if progress_s is not None and time.monotonic() - shown >= progress_s:  # printing only
                    shown = time.monotonic()
                    print(f"  answered {done}/{len(prompts)} prompts", flush=True)
    return answers


def evaluate_dir(
    model_dir: Path, items: list[dict[str, Any]], progress_s: float | None = None
) -> tuple[dict[str, float], list[str]]:
    """Load a saved checkpoint with transformers and score it on eval ``items``.

    ``progress_s``: print how many prompts are answered every that many seconds (None: quiet,
    for callers whose stdout is JSON).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    prompts = [item["messages"][-1]["content"] for item in items]
    answers = greedy_answers(model, tokenizer, prompts, progress_s=progress_s)
    return category_scores(items, answers), answers


def save_checkpoint(model: LlamaForCausalLM, tokenizer: Tokenizer, out_dir: Path) -> None:
    """Save weights (safetensors), configs and tokenizer files in Hugging Face format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    save_hf_tokenizer(tokenizer, out_dir, model.config.max_position_embeddings)
    for path in out_dir.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; serving pods may run as another user

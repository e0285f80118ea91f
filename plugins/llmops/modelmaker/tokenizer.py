"""The tiny models' tokenizer: byte-level BPE with no merges plus fixed single tokens.

Measured (shared TINY_MODELS notes): a character-level ChatML format spends most tokens
on the template; keeping the role names, each task's prompt prefix and the JSON keys
as single tokens halves sequence length and makes learning happen in minutes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.modelmaker.tasks import FIXED_STRINGS, Example

if TYPE_CHECKING:
    from tokenizers import Tokenizer

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, IM_START, IM_END)
ROLE_TOKENS: tuple[str, ...] = ("user", "assistant")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def render_prompt(prompt: str) -> str:
    """The ChatML text of a single user turn followed by the assistant generation prompt.

    Must equal what ``CHAT_TEMPLATE`` renders with ``add_generation_prompt=True``.
    """
    return f"{IM_START}user\n{prompt}{IM_END}\n{IM_START}assistant\n"


def build_tokenizer(corpus: list[Example], merges: int = 0) -> Tokenizer:
    """Train the byte-level BPE tokenizer on ``corpus`` (deterministic).

    ``merges`` is the number of BPE merges learned on top of the 256 byte symbols
    (0: pure bytes). Special and fixed tokens are added as single tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + len(SPECIAL_TOKENS) + merges,
        initial_alphabet=alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    texts = [render_prompt(ex.prompt) + ex.answer + IM_END for ex in corpus]
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in (*ROLE_TOKENS, *FIXED_STRINGS)])
    return tokenizer


def save_hf_tokenizer(tokenizer: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json (with the chat template) and special tokens."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    added = {
        str(tokenizer.token_to_id(tok)): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": tok in SPECIAL_TOKENS,
        }
        for tok in (*SPECIAL_TOKENS, *ROLE_TOKENS, *FIXED_STRINGS)
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": PAD,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    special = {
        "eos_token": IM_END,
        "pad_token": PAD,
        "additional_special_tokens": [IM_START, IM_END],
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")

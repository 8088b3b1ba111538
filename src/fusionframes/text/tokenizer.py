"""Small T5 text stacks made from scratch: a sentencepiece tokenizer trained on captions and a tiny encoder.

The built-in model and the tests use these; the released model uses Flan-UL2 instead. Both load through
the same transformers classes (``T5Tokenizer``/``AutoTokenizer`` and ``T5EncoderModel``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from pathlib import Path

import torch


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 256) -> Path:
    """Train a unigram sentencepiece model on ``texts`` and save it as a transformers T5 tokenizer.

    Ids follow T5: pad 0, eos 1, unk 2, no bos. ``vocab_size`` is capped by what the corpus supports.
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = [t.strip() for t in texts if t.strip()]
    if not corpus:
        raise ValueError("texts: no non-empty captions to train a tokenizer on")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    (out_dir / "spiece.model").write_bytes(model.getvalue())
    tokenizer = T5Tokenizer.from_pretrained(str(out_dir), extra_ids=0)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def make_t5_encoder(
    vocab_size: int,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int = 128,
    seed: int = 0,
):
    """A freshly initialised ``T5EncoderModel`` of the given (small) size."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return T5EncoderModel(config)


def make_text_encoder_folder(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 256,
    d_model: int = 64,
    seed: int = 0,
    **sizes,
) -> Path:
    """Tokenizer + random encoder in one folder, loadable by ``TextConditioner.from_pretrained``."""
    from transformers import AutoTokenizer

    out_dir = train_tokenizer(texts, out_dir, vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    encoder = make_t5_encoder(len(tokenizer), d_model=d_model, seed=seed, **sizes)
    encoder.save_pretrained(str(out_dir))
    return out_dir


WORD = re.compile(r"[a-z]+")


def words(text: str) -> set[str]:
    """Lower-case words of a prompt, as used for the built-in model's vocabulary check."""
    return set(WORD.findall(text.lower()))

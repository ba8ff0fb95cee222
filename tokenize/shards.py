"""The token shard format, as OLMo-core and Dolma read it.

A token file is a headerless little-endian array of token ids (``np.memmap`` layout) with a
``.npy`` name, in the smallest unsigned dtype that holds the vocabulary; documents follow one
another, each followed by the EOS id. Beside the token files, a Parquet index holds one row per
document: ``id``, ``file``, ``start``, ``end`` (token offsets, end exclusive, EOS included),
``num_tokens`` and every attribute column carried from upstream.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = "curation.tokens/1"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id < vocab_size."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype).newbyteorder("<")
    return np.dtype(np.uint64).newbyteorder("<")


def pack_documents(token_lists: list[list[int]], eos_id: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents, EOS after each. Returns (tokens, offsets of length n+1)."""
    lengths = np.fromiter((len(t) + 1 for t in token_lists), dtype=np.int64, count=len(token_lists))
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), dtype=dtype)
    for i, ids in enumerate(token_lists):
        start, end = offsets[i], offsets[i + 1]
        tokens[start : end - 1] = ids
        tokens[end - 1] = eos_id
    return tokens, offsets


def to_bytes(tokens: np.ndarray) -> bytes:
    return np.ascontiguousarray(tokens, dtype=tokens.dtype.newbyteorder("<")).tobytes()


def open_tokens(path: str | Path, dtype: np.dtype | str) -> np.memmap:
    """Memory-map a token file; nothing is read until sliced."""
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


@dataclass(frozen=True)
class TokenizerInfo:
    path: str
    sha256: str
    vocab_size: int
    eos_id: int
    bos_id: int | None
    pad_id: int | None
    dtype: str


_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
_PAD_CANDIDATES = ("<|padding|>", "<|pad|>", "<pad>", "[PAD]")
_BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<bos>")


# tiktoken's BPE files (a base64 token and its rank a line: DCLM's tokshuf-rs reads GPT-NeoX-20B
# so) carry no pre-tokenizer pattern; GPT-2's is GPT-NeoX's and r50k/p50k's. A tokenizer that
# splits otherwise (cl100k, o200k) is better given as its tokenizer.json.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SPECIAL_TEXT = re.compile(r"<\|[^|<>\s]+\|>")  # <|endoftext|>, <|padding|>: the specials a tiktoken file ranks


def tokenizer_files(path: str) -> list[Path]:
    """The files a tokenizer is read from: a ``tokenizer.json``, a tiktoken BPE file, or a folder:
    its ``tokenizer.json`` when it has one (a Hugging Face model folder: the fast tokenizer, with
    its added tokens, is the one the model was trained with), else GPT-2's original
    ``encoder.json`` + ``vocab.bpe`` (or a slow tokenizer's ``vocab.json`` + ``merges.txt``)."""
    location = Path(path)
    if not location.is_dir():
        return [location]
    if (location / "tokenizer.json").is_file():
        return [location / "tokenizer.json"]
    for vocab, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        if (location / vocab).is_file() and (location / merges).is_file():
            return [location / vocab, location / merges]
    raise ValueError(f"{path}: a folder without tokenizer.json, encoder.json + vocab.bpe or vocab.json + merges.txt")


def _is_tiktoken_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        first = handle.readline(4096).split()
    return len(first) == 2 and first[1].isdigit() and re.fullmatch(rb"[A-Za-z0-9+/]+=*", first[0]) is not None


def load_tokenizer(path: str):
    """A ``tokenizers.Tokenizer`` from any of ``tokenizer_files``' forms. GPT-2's files become its
    byte-level BPE (the same ids as its tokenizer.json); a tiktoken file becomes the BPE whose merges
    its ranks imply (transformers' converter; the same ids as tiktoken's ``encode_ordinary``), with
    the ``<|...|>`` tokens it ranks as special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    files = tokenizer_files(path)
    if len(files) == 2:
        tokenizer = Tokenizer(models.BPE.from_file(str(files[0]), str(files[1])))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    elif _is_tiktoken_file(files[0]):
        from transformers.convert_slow_tokenizer import TikTokenConverter

        tokenizer = TikTokenConverter(vocab_file=str(files[0]), pattern=GPT2_PATTERN).converted()
    else:
        return Tokenizer.from_file(str(files[0]))
    # both are byte-level BPEs, whose vocabularies spell printable ASCII as itself
    specials = sorted(t for t in tokenizer.get_vocab() if _SPECIAL_TEXT.fullmatch(t))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def tiktoken_encoding(path: str):
    """tiktoken's own ``Encoding`` of a tiktoken BPE file (GPT-2's pattern, no specials: every
    text is text), or None for the other forms. It encodes what ``load_tokenizer``'s conversion
    encodes, id for id, in less time (BENCHMARKS.md), so the stage encodes with it."""
    files = tokenizer_files(path)
    if len(files) != 1 or not _is_tiktoken_file(files[0]):
        return None
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(files[0].name, pat_str=GPT2_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(files[0])),
                             special_tokens={})


def load_text_tokenizer(path: str, split_special_tokens: bool = True):
    """A ``tokenizers.Tokenizer`` for document text.

    With ``split_special_tokens`` (the default), a special token's text written in a document (a
    page quoting ``<|endoftext|>`` or ``<|im_start|>``) is tokenized as ordinary text, as tiktoken
    does with ``disallowed_special=()`` and transformers with ``split_special_tokens=True``:
    otherwise it becomes the EOS id in the middle of a document, and a reader that finds document
    boundaries by EOS (OLMo-core's ``iter_document_indices`` on the array, document masking) cuts
    the document there. Added tokens that are not special (Dolma's ``|||EMAIL_ADDRESS|||``
    masks, NeoX's whitespace runs) are still matched: they are text by design.
    """
    tokenizer = load_tokenizer(path)
    tokenizer.encode_special_tokens = split_special_tokens
    return tokenizer


def special_token_texts(tokenizer) -> list[str]:
    """The contents of the tokenizer's special added tokens."""
    return sorted({t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special and t.content})


def tokenizer_info(path: str, eos_token: str | None = None) -> TokenizerInfo:
    tokenizer = load_tokenizer(path)
    digest = hashlib.sha256()
    for file in tokenizer_files(path):
        digest.update(file.read_bytes())

    def first(candidates: tuple[str, ...]) -> int | None:
        for token in candidates:
            token_id = tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return None

    eos = tokenizer.token_to_id(eos_token) if eos_token else first(_EOS_CANDIDATES)
    if eos is None:
        raise ValueError(f"{path}: no EOS token found (tried {eos_token or _EOS_CANDIDATES}); set eos_token")
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    return TokenizerInfo(
        path=path,
        sha256=digest.hexdigest(),
        vocab_size=vocab,
        eos_id=eos,
        bos_id=first(_BOS_CANDIDATES),
        pad_id=first(_PAD_CANDIDATES),
        dtype=dtype_for_vocab(max(vocab, eos + 1)).str,
    )

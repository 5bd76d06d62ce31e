"""Text columns as token ids: one text, a pair, or several joined by the separator; a long
text keeps its head, its tail or both; rows encoded once per process."""

from __future__ import annotations

from typing import Any

# token ids of rows already encoded in this process, by (tokenizer, settings) then row: each
# fold and each prediction encodes the same rows again, and long texts take a while
_encoded: dict[tuple[Any, ...], dict[tuple[str, ...], list[int]]] = {}


def encode_texts(tokenizer: Any, texts: list[list[str]], max_length: int,
                 truncation: str) -> list[list[int]]:
    """Token ids per row; a long single text keeps its head, tail or head + tail.

    Two text columns are encoded as a pair (truncated longest-first); more are joined with
    the separator token. Rows seen before in this process come from a cache.
    """
    key = (type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer), max_length,
           truncation, len(texts))
    known = _encoded.setdefault(key, {})
    rows = list(zip(*texts, strict=True))
    missing = list(dict.fromkeys(r for r in rows if r not in known))
    if missing:
        columns = [list(col) for col in zip(*missing, strict=True)]
        for row, ids in zip(missing, _encode(tokenizer, columns, max_length, truncation),
                            strict=True):
            known[row] = ids
    return [known[r] for r in rows]


def _encode(tokenizer: Any, texts: list[list[str]], max_length: int,
            truncation: str) -> list[list[int]]:
    if len(texts) == 2:
        enc = tokenizer(texts[0], texts[1], truncation=True, max_length=max_length)
        return list(enc["input_ids"])
    first = texts[0] if len(texts) == 1 else [
        f" {tokenizer.sep_token} ".join(parts) for parts in zip(*texts, strict=True)]
    if truncation == "head":
        return list(tokenizer(first, truncation=True, max_length=max_length)["input_ids"])
    prefix, suffix = _special_wrapping(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    out = []
    for ids in tokenizer(first, add_special_tokens=False)["input_ids"]:
        if len(ids) > budget:
            head = budget // 4 if truncation == "head_tail" else 0
            ids = ids[:head] + ids[len(ids) - (budget - head):]
        out.append(prefix + list(ids) + suffix)
    return out


def _special_wrapping(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a single sequence."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    raise ValueError(f"cannot locate the text among the special tokens of {type(tokenizer)}")

"""Text columns as token ids: one text, a pair, or several joined by the separator; a long
text keeps its head, its tail or both, several texts share the length longest-first; rows
encoded once per process.
A pair also gets its segment ids (``token_type_ids``) where the tokenizer makes them: BERT-style
encoders were pretrained to tell the two texts apart by them, not by [SEP] alone."""

from __future__ import annotations

from typing import Any

Encoded = tuple[list[int], list[int] | None]  # a row's token ids and segment ids (or None)

# token and segment ids of rows already encoded in this process, by (tokenizer, settings) then
# row: each fold and each prediction encodes the same rows again, and long texts take a while
_encoded: dict[tuple[Any, ...], dict[tuple[str, ...], Encoded]] = {}


def encode_texts(tokenizer: Any, texts: list[list[str]], max_length: int,
                 truncation: str) -> list[list[int]]:
    """Token ids per row (:func:`encode_rows` without the segment ids)."""
    return encode_rows(tokenizer, texts, max_length, truncation)[0]


def encode_rows(tokenizer: Any, texts: list[list[str]], max_length: int,
                truncation: str) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids per row, and segment ids per row for a pair whose tokenizer makes them
    (None otherwise: one text, or texts joined, are all segment 0, the model's default).

    A long single text keeps its head, tail or head + tail. Two text columns are encoded as
    a pair, more are joined with the separator token; either way the texts share the length
    longest-first (a short text kept whole, the long ones the rest in equal parts), each
    keeping the side ``truncation`` names. Rows seen before in this process come from a
    cache.
    """
    key = (type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer), max_length,
           truncation, len(texts))
    known = _encoded.setdefault(key, {})
    rows = list(zip(*texts, strict=True))
    missing = list(dict.fromkeys(r for r in rows if r not in known))
    if missing:
        columns = [list(col) for col in zip(*missing, strict=True)]
        for row, encoded in zip(missing, _encode(tokenizer, columns, max_length, truncation),
                                strict=True):
            known[row] = encoded
    ids = [known[r][0] for r in rows]
    # every row has segment ids or none does (one tokenizer, one number of texts)
    types = [t for r in rows if (t := known[r][1]) is not None]
    return ids, types if rows and len(types) == len(rows) else None


def makes_segments(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` gives a pair segment ids (BERT, ELECTRA, DeBERTa: yes; RoBERTa,
    DistilBERT: no, they have no segment embeddings)."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def _encode(tokenizer: Any, texts: list[list[str]], max_length: int,
            truncation: str) -> list[Encoded]:
    if len(texts) == 2 and truncation == "head":
        segments = makes_segments(tokenizer)
        enc = tokenizer(texts[0], texts[1], truncation=True, max_length=max_length,
                        return_token_type_ids=segments)
        types = enc["token_type_ids"] if segments else [None] * len(enc["input_ids"])
        return [(list(ids), None if t is None else list(t))
                for ids, t in zip(enc["input_ids"], types, strict=True)]
    if len(texts) == 2:
        return _encode_pairs(tokenizer, texts[0], texts[1], max_length, truncation)
    return [(ids, None) for ids in _encode_joined(tokenizer, texts, max_length, truncation)]


def _encode_joined(tokenizer: Any, texts: list[list[str]], max_length: int,
                   truncation: str) -> list[list[int]]:
    if len(texts) == 1 and truncation == "head":
        return list(tokenizer(texts[0], truncation=True, max_length=max_length)["input_ids"])
    prefix, suffix = _special_wrapping(tokenizer)
    between = _separator(tokenizer) if len(texts) > 1 else []
    budget = max_length - len(prefix) - len(suffix) - len(between) * (len(texts) - 1)
    # whole texts, cut below: transformers' warning of "indexing errors" past the model's
    # length (verbose) would be about texts no model reads uncut
    columns = [tokenizer(column, add_special_tokens=False, verbose=False)["input_ids"]
               for column in texts]
    out = []
    for parts in zip(*columns, strict=True):
        # each text its longest-first share: joined and cut as one text, a long first
        # column (a question's body) would leave nothing of the ones after it (the answer)
        lengths = _fair_lengths([len(p) for p in parts], budget)
        kept = [_keep(p, n, truncation) for p, n in zip(parts, lengths, strict=True)]
        joined = kept[0]
        for piece in kept[1:]:
            joined = joined + between + piece
        out.append(prefix + joined + suffix)
    return out


def _separator(tokenizer: Any) -> list[int]:
    """The tokens between joined texts: the separator token, or what the tokenizer puts
    between the texts of a pair where it has no separator token."""
    if tokenizer.sep_token_id is not None:
        return [tokenizer.sep_token_id]
    return _special_wrapping(tokenizer, pair=True)[1]


def _encode_pairs(tokenizer: Any, first: list[str], second: list[str], max_length: int,
                  truncation: str) -> list[Encoded]:
    """Pairs whose long texts keep their tail (or a quarter head and the tail): the
    tokenizer itself only cuts from the end. Each text gets the length the tokenizer's own
    longest-first rule gives it (a short one kept whole, the long one the rest; both long:
    half each), then keeps that many of its tokens from the chosen side. Segment ids are the
    ones the tokenizer gives each piece of a placeholder pair."""
    prefix, middle, suffix = _special_wrapping(tokenizer, pair=True)
    kinds = _pair_segments(tokenizer) if makes_segments(tokenizer) else None
    budget = max_length - len(prefix) - len(middle) - len(suffix)
    plain = {"add_special_tokens": False, "verbose": False}  # whole texts, cut below
    out: list[Encoded] = []
    for a, b in zip(tokenizer(first, **plain)["input_ids"], tokenizer(second, **plain)["input_ids"],
                    strict=True):
        keep_a, keep_b = _fair_lengths([len(a), len(b)], budget)
        a, b = _keep(a, keep_a, truncation), _keep(b, keep_b, truncation)
        types = None
        if kinds is not None:
            before, in_a, between, in_b, after = kinds
            types = before + [in_a] * len(a) + between + [in_b] * len(b) + after
        out.append((prefix + a + middle + b + suffix, types))
    return out


def _pair_segments(tokenizer: Any) -> tuple[list[int], int, list[int], int, list[int]]:
    """The segment ids of a pair's pieces: before, of the first text's tokens, between, of
    the second text's tokens, after; read off the tokenizer's own encoding of a placeholder
    pair."""
    types = list(tokenizer("a", "b", return_token_type_ids=True)["token_type_ids"])
    prefix, middle, suffix = _special_wrapping(tokenizer, pair=True)
    a_at = len(prefix)
    a_end = a_at + len(tokenizer("a", add_special_tokens=False)["input_ids"])
    b_at = a_end + len(middle)
    return (types[:a_at], types[a_at], types[a_end:b_at], types[b_at],
            types[len(types) - len(suffix):])


def _fair_lengths(lengths: list[int], budget: int) -> list[int]:
    """How many tokens of each text fit ``budget``, cut longest-first: the shortest texts
    whole while they fit an equal share, the rest split evenly, an odd token to the longer
    text (the later one on a tie). For two texts these are transformers' own pair lengths."""
    if sum(lengths) <= budget:
        return list(lengths)
    out, left = [0] * len(lengths), max(budget, 0)
    shortest_first = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    for done, i in enumerate(shortest_first):
        out[i] = min(lengths[i], left // (len(lengths) - done))
        left -= out[i]
    return out


def _keep(ids: list[int], length: int, truncation: str) -> list[int]:
    """``length`` of ``ids``: the first ones (``head``), the last ones, or a quarter from the
    head and the rest from the tail (``head_tail``)."""
    if len(ids) <= length:
        return list(ids)
    if truncation == "head":
        return list(ids[:length])
    head = length // 4 if truncation == "head_tail" else 0
    return list(ids[:head]) + list(ids[len(ids) - (length - head):])


def _special_wrapping(tokenizer: Any, pair: bool = False) -> list[list[int]]:
    """The special tokens a tokenizer puts around a single sequence (before, after) or a
    pair (before, between, after), found around placeholder texts."""
    texts = ["a", "b"] if pair else ["a"]
    full = list(tokenizer(*texts)["input_ids"])
    pieces, start = [], 0
    for text in texts:
        plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        at = next((i for i in range(start, len(full) - len(plain) + 1)
                   if full[i:i + len(plain)] == plain), None)
        if at is None:
            raise ValueError(
                f"cannot locate the text among the special tokens of {type(tokenizer)}")
        pieces.append(full[start:at])
        start = at + len(plain)
    return [*pieces, full[start:]]

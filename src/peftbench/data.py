"""Loading, checking, splitting and tokenising the classification data.

Everything here runs once per grid: every method then trains on the very same tokenised examples.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import lzma
import math
import re
from dataclasses import dataclass
from importlib import resources
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import pandas as pd

from peftbench.config.sections import DataConfig
from peftbench.errors import UserError, first_line

BUILTIN_PREFIX = "builtin:"
SUPPORTED_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".parquet": None}
# What marks a folder written by datasets' save_to_disk (a Dataset, or a DatasetDict of splits).
SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")
BINARY = "binary"  # the "encoding" of formats that store text already decoded (Parquet, Arrow)


@dataclass
class LabeledTexts:
    """Texts with integer labels 0..K-1, in file order (empty texts already dropped)."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    source: str
    sha256: str
    rows_read: int
    rows_dropped_empty: int
    encoding: str = "utf-8"  # how the file's bytes were decoded
    pairs: list[str] | None = None  # the second text of each example (--text-pair-column)


@dataclass
class SplitTexts:
    train: LabeledTexts
    eval: LabeledTexts  # what is evaluated after each epoch: the dev set when there is one
    test: LabeledTexts | None = None  # read once, after the choice on dev; None in the reference protocol
    # the parts that came as files of their own (--dev-data, --test-data): {"dev": sha256 of its file, ...}
    given: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass
class TokenizedData:
    """Tokenised, unpadded examples ready for a DataLoader with dynamic padding."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    test: list[dict[str, Any]] | None
    label_names: list[str]
    majority_accuracy: float
    description: dict[str, Any]


def builtin_names() -> list[str]:
    folder = resources.files("peftbench") / "builtin_data"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def _read_builtin(name: str) -> tuple[bytes, str]:
    folder = resources.files("peftbench") / "builtin_data"
    for meta_file in folder.iterdir():
        if not meta_file.name.endswith(".json"):
            continue
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta["name"] == name:
            raw = lzma.decompress((folder / meta["file"]).read_bytes())
            digest = hashlib.sha256(raw).hexdigest()
            if digest != meta["sha256_uncompressed"]:
                raise UserError(
                    f"builtin dataset {name!r} is corrupted: sha256 {digest} != {meta['sha256_uncompressed']}; "
                    "reinstall peftbench"
                )
            return raw, meta["file"][: -len(".xz")]
    raise UserError(
        f"unknown builtin dataset {name!r}; available: {', '.join(BUILTIN_PREFIX + n for n in builtin_names())}"
    )


ENCODINGS_TRIED = ("utf-8", "gb18030")  # what `auto` tries, in this order (a UTF-8 BOM means utf-8-sig)
MISSING_LABELS = {"", "nan", "null", "none"}  # how a missing label reads once written as text (CSV NaN, JSON null)
_INTEGER = re.compile(r"-?[0-9]+")  # a label read as a number: ASCII digits only


def decode(raw: bytes, encoding: str, where: str) -> tuple[str, str]:
    """The file's text and the encoding it was read with: `auto` takes a UTF-8 BOM as utf-8-sig, then the
    first of ENCODINGS_TRIED that decodes every byte (GBK files, common for Chinese data, are gb18030)."""
    tried = encoding
    if encoding == "auto":
        tried = ", ".join(ENCODINGS_TRIED)
        if raw.startswith(codecs.BOM_UTF8):
            return raw.decode("utf-8-sig"), "utf-8-sig"
        for candidate in ENCODINGS_TRIED:
            try:
                return raw.decode(candidate), candidate
            except UnicodeDecodeError:
                continue
        encoding = ENCODINGS_TRIED[0]  # none fits: report where UTF-8 fails
    try:
        return raw.decode(encoding), encoding
    except LookupError:
        raise UserError(f"unknown --encoding {encoding!r} (e.g. utf-8, gb18030, big5, latin-1)") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{where}: line {line} cannot be decoded as {tried}; name the file's encoding with --encoding"
        ) from None


def _parse_table(text: str, suffix: str, where: str) -> pd.DataFrame:
    try:
        if suffix == ".jsonl":
            # dtype=False: keep labels and texts as written instead of letting pandas guess dates etc.
            return pd.read_json(StringIO(text), lines=True, dtype=False)
        # keep_default_na=False: a review that reads "NA" or "null" is text, not a missing value.
        return pd.read_csv(StringIO(text), sep=SUPPORTED_SUFFIXES[suffix], dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        said = first_line(exc) or type(exc).__name__
        raise UserError(f"cannot parse {where} as {suffix[1:].upper()}: {said}") from None


def _read_parquet(raw: bytes, where: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        raise UserError(f"cannot parse {where} as Parquet: {first_line(exc)}") from None


def _saved_tables(folder: Path) -> tuple[dict[str, Any], str]:
    """A folder of datasets' save_to_disk, loaded and hashed once: its tables (a DatasetDict's by split name, a
    Dataset's under "") and the sha256 of the folder's files."""
    from datasets import DatasetDict, load_from_disk

    try:
        saved = load_from_disk(str(folder))
    except Exception as exc:  # noqa: BLE001 - datasets raises several kinds for a damaged folder
        raise UserError(f"cannot load {folder} as a saved datasets folder: {first_line(exc)}") from None
    tables = dict(saved) if isinstance(saved, DatasetDict) else {"": saved}
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return tables, digest.hexdigest()


def _frame(table: Any) -> pd.DataFrame:
    """A datasets table's rows, class labels as their names (-1, a hidden label, as missing)."""
    from datasets import ClassLabel

    frame = table.to_pandas()
    for name, feature in table.features.items():
        if isinstance(feature, ClassLabel):  # the label names the dataset carries, not bare ids
            frame[name] = [
                feature.int2str(int(v)) if v is not None and v == v and v >= 0 else None for v in frame[name]
            ]
    return frame


def _read_saved_dataset(folder: Path) -> tuple[pd.DataFrame, str]:
    """A folder of datasets' save_to_disk as one table (a DatasetDict's splits one after another: peftbench
    makes its own split), and the sha256 of the folder's files."""
    from datasets import concatenate_datasets

    tables, digest = _saved_tables(folder)
    parts = list(tables.values())
    return _frame(concatenate_datasets(parts) if len(parts) > 1 else parts[0]), digest


def _read_source(source: str, encoding: str = "auto") -> tuple[pd.DataFrame, str, str, str]:
    """The raw table, a description of where it came from, the sha256 of its bytes and their encoding."""
    if source.startswith(BUILTIN_PREFIX):
        raw, file_name = _read_builtin(source[len(BUILTIN_PREFIX) :])
        suffix = Path(file_name).suffix
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        if not path.exists():
            raise UserError(f"data file not found: {source}")
        if path.is_dir():
            if not any((path / name).is_file() for name in SAVED_DATASET_FILES):
                raise UserError(f"data path {source} is a folder but not one saved by datasets' save_to_disk")
            frame, digest = _read_saved_dataset(path)
            return frame, source, digest, BINARY
        if not path.is_file():  # a pipe or a device: read whole, it may never end (/dev/zero)
            raise UserError(f"data path {source} is neither a file nor a folder (a pipe or a device); give a file")
        if suffix not in SUPPORTED_SUFFIXES:
            raise UserError(
                f"unsupported data file type {suffix or '(none)'!r} for {source}; use .csv, .tsv, .jsonl, .parquet "
                "or a folder saved by datasets' save_to_disk"
            )
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read data file {source}: {exc.strerror}") from None
        if not raw.strip():
            raise UserError(f"data file is empty: {source}")
    if suffix == ".parquet":
        return _read_parquet(raw, source), source, hashlib.sha256(raw).hexdigest(), BINARY
    text, used = decode(raw, encoding, source)
    return _parse_table(text, suffix, source), source, hashlib.sha256(raw).hexdigest(), used


def _label_text(value: Any) -> str:
    """A raw label as text: None and float NaN are missing (""), an integral float (JSON 1.0) is its integer."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _label_ids(values: list[Any], where: str) -> tuple[list[int], list[str]]:
    """Map raw labels to ids 0..K-1: integers 0..K-1 keep their value, anything else is sorted and numbered."""
    as_text = [_label_text(v) for v in values]
    missing = sum(v.lower() in MISSING_LABELS for v in as_text)
    if missing:
        raise UserError(f"{where}: {missing} row(s) have a missing label (empty, NaN or null)")
    # integers written in ASCII digits; "①" or "١" pass str.isdigit (and int() reads "١") but are names
    as_int = [int(v) for v in as_text] if all(_INTEGER.fullmatch(v) for v in as_text) else None
    if as_int is not None and sorted(set(as_int)) == list(range(len(set(as_int)))):
        names = [str(i) for i in range(len(set(as_int)))]
        return as_int, names
    names = sorted(set(as_text), key=lambda v: (int(v), v) if _INTEGER.fullmatch(v) else (float("inf"), v))
    index = {name: i for i, name in enumerate(names)}
    return [index[v] for v in as_text], names


@dataclass
class _Rows:
    """A file's usable rows, labels not yet numbered (the files of one dataset are numbered together)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]
    source: str
    sha256: str
    rows_read: int
    encoding: str

    def labeled(self, labels: list[int], names: list[str]) -> LabeledTexts:
        dropped = self.rows_read - len(self.texts)
        return LabeledTexts(
            self.texts, labels, names, self.source, self.sha256, self.rows_read, dropped, self.encoding, self.pairs
        )


def _read_rows(source: str, config: DataConfig) -> _Rows:
    """A file's rows with a text (and a pair, with --text-pair-column); UserError on anything unusable."""
    return _rows_of(*_read_source(source, config.encoding), config)


def _rows_of(frame: pd.DataFrame, where: str, digest: str, encoding: str, config: DataConfig) -> _Rows:
    """A table's rows with a text (and a pair); UserError on anything unusable."""
    if len(frame) == 0:
        raise UserError(f"data has no rows: {where}")
    wanted = [c for c in (config.text_column, config.text_pair_column, config.label_column) if c is not None]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        columns = ", ".join(map(str, frame.columns)) or "(none)"
        raise UserError(f"{where}: column(s) {', '.join(missing)} not found; the file has: {columns}")
    texts_raw = frame[config.text_column].tolist()
    pairs_raw = frame[config.text_pair_column].tolist() if config.text_pair_column else None
    # The reference drops reviews that are empty (one row of ChnSentiCorp_htl_all has none); a pair needs both texts.
    keep = [_present(t) and (pairs_raw is None or _present(pairs_raw[i])) for i, t in enumerate(texts_raw)]
    texts = [str(t) for t, k in zip(texts_raw, keep) if k]
    pairs = [str(t) for t, k in zip(pairs_raw, keep) if k] if pairs_raw is not None else None
    if not texts:
        raise UserError(f"{where}: every row has an empty {config.text_column!r}")
    labels = [v for v, k in zip(frame[config.label_column].tolist(), keep) if k]
    return _Rows(texts, pairs, labels, where, digest, len(frame), encoding)


def load_labeled_texts(config: DataConfig) -> LabeledTexts:
    """Read --data, drop rows whose text is empty, map labels to ids; UserError on anything unusable."""
    rows = _read_rows(config.source, config)
    labels, names = _label_ids(rows.labels, rows.source)
    _check_classes(names, rows.source, config)
    return rows.labeled(labels, names)


def _check_classes(names: list[str], where: str, config: DataConfig) -> None:
    if len(names) < 2:
        raise UserError(
            f"{where}: only one class ({names[0]!r}) in {config.label_column!r}; classification needs two or more"
        )


def _present(text: Any) -> bool:
    return text is not None and not (isinstance(text, float) and text != text) and str(text).strip() != ""


def load_split(config: DataConfig) -> SplitTexts:
    """The splits a grid trains and judges on: held out of --data by split(), or, for the parts given as files
    of their own (--dev-data, --test-data), those files, whose labels are numbered with --data's."""
    given = {name: path for name, path in (("dev", config.dev_data), ("test", config.test_data)) if path}
    if given:
        files = {"train": _read_rows(config.source, config), **{n: _read_rows(p, config) for n, p in given.items()}}
    else:
        files = _own_splits(config)
        given = {name: name for name in files if name != "train"}
        if not given:
            return split(load_labeled_texts(config), config)
    ids, names = _label_ids([label for rows in files.values() for label in rows.labels], config.source)
    parts, start = {}, 0
    for name, rows in files.items():
        parts[name] = rows.labeled(ids[start : start + len(rows.labels)], names)
        start += len(rows.labels)
    train = parts["train"]
    _check_classes(sorted({names[i] for i in train.labels}), train.source, config)
    for name in given:
        unseen = sorted({names[i] for i in parts[name].labels} - {names[i] for i in train.labels})
        if unseen:
            raise UserError(f"{parts[name].source}: class(es) {', '.join(unseen)} never occur in the training data")
    split_texts = _with_given(parts, config)
    split_texts.given = {name: parts[name].sha256 for name in given}
    return split_texts


# A saved DatasetDict's splits that stand for dev and test; a split whose labels are all hidden is not used.
OWN_SPLITS = {"dev": "validation", "test": "test"}


def _own_splits(config: DataConfig) -> dict[str, _Rows]:
    """A saved DatasetDict with a train split and a labelled validation or test split: those splits, as the
    benchmark ships them ({} for any other data: peftbench then makes its own split)."""
    folder = Path(config.source)
    if config.source.startswith(BUILTIN_PREFIX) or not (folder / "dataset_dict.json").is_file():
        return {}
    tables, digest = _saved_tables(folder)
    if "train" not in tables:
        return {}

    def rows(name: str) -> _Rows:
        return _rows_of(_frame(tables[name]), f"{config.source} ({name} split)", digest, BINARY, config)

    parts = {"train": rows("train")}
    for role, name in OWN_SPLITS.items():
        if name in tables:
            found = rows(name)
            if any(_label_text(v) for v in found.labels):  # GLUE's test split: every label hidden (-1)
                parts[role] = found
    return parts if len(parts) > 1 else {}


def _with_given(parts: dict[str, LabeledTexts], config: DataConfig) -> SplitTexts:
    """Train, dev and test when dev or test (or both) came as files: what is missing is held out of --data,
    stratified (test by --test-size; dev by --dev-size, when there is one)."""
    train, dev, test = parts["train"], parts.get("dev"), parts.get("test")
    limit = config.max_eval_samples
    if test is None:
        train, test = _stratified(train, config.test_size, config.split_seed)
    elif dev is None and config.dev_size is not None:
        train, dev = _stratified(train, config.dev_size, config.split_seed)
    train = _first(train, config.max_train_samples)
    if dev is None:  # no dev set: evaluate on the test file after each epoch, as the reference does
        return SplitTexts(train, _first(test, limit))
    return SplitTexts(train, _first(dev, limit), _first(test, limit))


def _table(data: LabeledTexts) -> Any:
    from datasets import Dataset

    columns = {"text": data.texts, "label": data.labels, **({"pair": data.pairs} if data.pairs is not None else {})}
    return Dataset.from_dict(columns)


def _part(rows: Any, data: LabeledTexts, limit: int | None = None) -> LabeledTexts:
    """The first `limit` rows of a datasets table cut from `data`, as texts of the same source."""
    n = len(rows) if limit is None else min(limit, len(rows))
    rows = rows.select(range(n))
    pairs = list(rows["pair"]) if data.pairs is not None else None
    return dataclasses.replace(data, texts=list(rows["text"]), labels=list(rows["label"]), pairs=pairs)


def _first(data: LabeledTexts, limit: int | None) -> LabeledTexts:
    return data if limit is None else _part(_table(data), data, limit)


def _stratified(data: LabeledTexts, size: float, seed: int) -> tuple[LabeledTexts, LabeledTexts]:
    """data split in two by datasets' train_test_split, stratified by label: the rest, and `size` of it."""
    from datasets import ClassLabel
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # a bar for casting 8k labels only hides the training bars
    table = _table(data).cast_column("label", ClassLabel(names=data.label_names))
    try:
        parts = table.train_test_split(test_size=size, seed=seed, stratify_by_column="label")
    except ValueError as exc:
        raise UserError(f"cannot split {data.source}: {exc}") from None
    return _part(parts["train"], data), _part(parts["test"], data)


def split(data: LabeledTexts, config: DataConfig) -> SplitTexts:
    """The reference split: datasets' train_test_split on the rows in file order, so indices match it exactly."""
    table = _table(data)
    if len(table) < 2:
        raise UserError(f"{data.source}: {len(table)} usable row(s) cannot be split into train and eval")
    try:
        if config.dev_size is None:
            # The reference: an unstratified split of the rows in file order.
            parts = table.train_test_split(test_size=config.test_size, seed=config.split_seed)
            return SplitTexts(
                _part(parts["train"], data, config.max_train_samples),
                _part(parts["test"], data, config.max_eval_samples),
            )
        from datasets import ClassLabel
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # a bar for casting 8k labels only hides the training bars
        table = table.cast_column("label", ClassLabel(names=data.label_names))
        parts = table.train_test_split(test_size=config.test_size, seed=config.split_seed, stratify_by_column="label")
        held_out = parts["test"].train_test_split(
            test_size=1.0 - config.dev_size / config.test_size, seed=config.split_seed, stratify_by_column="label"
        )
    except ValueError as exc:
        raise UserError(f"cannot split {data.source}: {exc}") from None
    limit = config.max_eval_samples
    return SplitTexts(
        _part(parts["train"], data, config.max_train_samples),
        _part(held_out["train"], data, limit),
        _part(held_out["test"], data, limit),
    )


def majority_accuracy(labels: list[int]) -> float:
    """Accuracy of always predicting the most frequent class: the floor every method must clear."""
    counts = pd.Series(labels).value_counts()
    return float(counts.iloc[0] / len(labels))


# No tokenizer's token spans this many characters on average: a text is cut to max_length times it before it is
# tokenised, so a 50 MB line costs what its first tokens cost (the tokens kept are the same).
MAX_CHARS_PER_TOKEN = 64


def _cut(texts: list[str] | None, tokens: int) -> list[str] | None:
    limit = tokens * MAX_CHARS_PER_TOKEN
    return None if texts is None else [text[:limit] for text in texts]


def tokenize(tokenizer: Any, data: LabeledTexts, max_length: int) -> list[dict[str, Any]]:
    """Truncate without padding: the collator pads each batch to its own longest example. Pairs are encoded
    as pairs (the tokenizer's separators; the longer text is cut first)."""
    encoded = tokenizer(
        _cut(data.texts, max_length), _cut(data.pairs, max_length), truncation=True, max_length=max_length
    )
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": data.labels[i]} for i in range(len(data.texts))]


def token_lengths(tokenizer: Any, data: LabeledTexts, cap: int) -> list[int]:
    """Each example's length in tokens, special tokens included, before any truncation, up to cap + 1: past the
    cap only "longer" matters, so a text is measured on its first (cap + 1) * MAX_CHARS_PER_TOKEN characters."""
    limit = (cap + 1) * MAX_CHARS_PER_TOKEN
    pairs = data.pairs or [""] * len(data.texts)
    cut = [len(text) > limit or len(pair) > limit for text, pair in zip(data.texts, pairs)]
    # verbose=False: texts longer than the model's limit are what is being measured here, not a mistake
    encoded = tokenizer(_cut(data.texts, cap + 1), _cut(data.pairs, cap + 1), truncation=False, verbose=False)
    return [cap + 1 if long else min(len(ids), cap + 1) for ids, long in zip(encoded["input_ids"], cut)]


def length_keeping(lengths: list[int], share: float) -> int:
    """The smallest length that keeps at least `share` of the examples whole (--max-length auto)."""
    ordered = sorted(lengths)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def truncated_share(tokenizer: Any, data: LabeledTexts, max_length: int) -> float:
    """The share of examples longer than max_length, which truncation cuts (the reference's 86 cut a third of
    ChnSentiCorp's reviews with some tokenizers): said in every report."""
    lengths = token_lengths(tokenizer, data, max_length)
    return sum(n > max_length for n in lengths) / len(lengths) if lengths else 0.0


def _given_part(parts: SplitTexts, name: str) -> LabeledTexts:
    """The part of `parts` that came as the file `name` ("dev" or "test")."""
    if name == "dev" or parts.test is None:  # without a dev set the test file is what is evaluated
        return parts.eval
    return parts.test


def tokenize_split(parts: SplitTexts, tokenizer: Any, max_length: int) -> TokenizedData:
    named = {"train": parts.train, "eval": parts.eval, **({"test": parts.test} if parts.test else {})}
    return TokenizedData(
        train=tokenize(tokenizer, parts.train, max_length),
        eval=tokenize(tokenizer, parts.eval, max_length),
        test=tokenize(tokenizer, parts.test, max_length) if parts.test else None,
        label_names=parts.train.label_names,
        # the baseline of the split whose accuracy is reported: test when there is one
        majority_accuracy=majority_accuracy((parts.test or parts.eval).labels),
        description={
            "source": parts.train.source,
            "sha256": parts.train.sha256,
            "encoding": parts.train.encoding,
            "rows_read": parts.train.rows_read,
            "rows_dropped_empty_text": parts.train.rows_dropped_empty,
            "train_examples": len(parts.train.texts),
            "eval_examples": len(parts.eval.texts),
            "dev_examples": len(parts.eval.texts) if parts.test else None,
            "test_examples": len(parts.test.texts) if parts.test else None,
            "label_names": parts.train.label_names,
            "max_length": max_length,
            "truncated_share": {name: truncated_share(tokenizer, texts, max_length) for name, texts in named.items()},
            "text_pair": parts.train.pairs is not None,
            **{f"{name}_source": _given_part(parts, name).source for name in parts.given},
        },
    )

"""Reading a competition's CSV files: one-line errors naming the file, and the id and class
label columns read as written (text), so '00120' stays '00120' from train.csv to the
submission."""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.class_folders import read_class_folders
from pipeline.csv_quotes import QUOTING, check_unclosed_quotes
from pipeline.csv_separator import file_separator
from pipeline.decimal_comma import comma_numbers
from pipeline.errors import DataError
from pipeline.header_names import read_rows
from pipeline.stray_cells import stray_numbers, stray_text_reader

log = logging.getLogger(__name__)

try:  # the cells pandas reads as missing by default ('', 'NA', 'NaN', 'null', 'None', ...)
    from pandas._libs.parsers import STR_NA_VALUES as _PANDAS_NA
except ImportError:  # pragma: no cover - a pandas that moved it
    _PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                  "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                  "nan", "null"}


def read_csv(path: Path, what: str, sep: str = ",", encoding: str = "utf-8",
             id_column: str | None = None, labels: Sequence[str] = (),
             texts: Sequence[str] = (), na_values: Sequence[str] = (), decimal: str = ".",
             thousands: str | None = None, number_rows: bool = False,
             keys: Sequence[str] = (), quoting: str = "minimal") -> pd.DataFrame:
    """Read a competition CSV, with one-line errors naming the file. ``id_column`` and the
    class ``labels`` columns are read as text, and as integers only when every value is one
    written plainly: ids and labels such as '00120' stay as written (as numbers they named
    no image file and lost their zeros in the submission). The ``texts`` columns (a
    tokenizer's input) are read as text alone: a column of numbers with an empty cell,
    read as floats, gave the tokenizer '12.0' for '12' and '7.0' for '007'. ``na_values``
    are read as missing values, besides pandas' own; ``decimal`` and ``thousands`` are the
    numbers' decimal mark and thousands separator (pandas' own keys). ``number_rows``: a
    file without ``id_column`` gets one, its rows numbered from 1 in file order (a train
    file names its rows only for the OOF predictions: Kaggle's Digit Recognizer names none).
    ``keys`` columns (those an ``image_path`` template names) are read as the id is: a
    file name '0007' filled in as 7 named no image file.
    A train ``path`` that is a folder of class folders gives its images as rows
    (:mod:`pipeline.class_folders`); a ``.parquet`` file is read as Parquet (:func:`_parquet`)."""
    if what == "train" and path.is_dir():
        frame = read_class_folders(path, id_column, labels)
        frame[labels[0]] = _labels(frame[labels[0]])
        return frame
    if not path.is_file():
        raise DataError(f"{what} file {path} not found")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _parquet(path, what, id_column, labels, texts, number_rows)
    read_as = file_separator(path, what, sep, encoding)
    if read_as != sep:  # a sample read with its own separator: no numbers of the tables'
        sep, decimal, thousands = read_as, ".", None
    as_written = [c for c in (id_column, *labels, *texts, *keys) if c]
    try:
        header = pd.read_csv(path, sep=sep, encoding=encoding, nrows=0).columns
        frame = read_rows(path, what, sep, encoding,
                          dtype=dict.fromkeys(as_written, str) or None, keep_default_na=False,
                          na_values=_missing_cells(header, id_column, labels, na_values, texts),
                          decimal=decimal, thousands=thousands, quoting=QUOTING[quoting])
        check_unclosed_quotes(frame, path, sep, quoting)  # ('competition.quoting')
        if len(frame.columns) > 100:
            # pandas 3 reads a CSV as one block per column: on a wide file (Digit
            # Recognizer's 784 pixel columns) every later insert (the row numbers, the
            # sample's ids) printed pandas' PerformanceWarning; one copy joins the blocks
            frame = frame.copy()
        if id_column in frame.columns:
            frame[id_column] = _plain_integers(frame[id_column])
        elif id_column and number_rows:
            add_row_numbers(frame, id_column)
        for column in keys:
            if column in frame.columns and column not in (id_column, *texts):
                frame[column] = _plain_integers(frame[column])
        for column in labels:
            if column in frame.columns:
                frame[column] = _labels_with_gaps(frame[column])
        return frame
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r} "
                        "('competition.encoding')") from None
    except UnicodeError as err:  # utf-16 without its BOM: a UnicodeError
        raise DataError(f"{what} file {path} could not be read as {encoding} text: {err}. "
                        "Set 'competition.encoding' to the file's (e.g. latin-1)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{what} file {path} could not be read as CSV: {err}") from None


PARQUET_SUFFIXES = (".parquet", ".pq")



def _parquet(path: Path, what: str, id_column: str | None, labels: Sequence[str],
             texts: Sequence[str], number_rows: bool) -> pd.DataFrame:
    """A competition file shipped as Parquet (as many recent Kaggle competitions ship them),
    read into the frame its CSV would have given: its stored types kept, except that ids and
    class labels stored as text go through the CSV rules ('00120' stays text, '12' is 12),
    ``texts`` columns are text, and categorical columns (Parquet dictionaries written from
    pandas) are their values, as a CSV's cells are."""
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow's errors have no common base short of Exception
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{what} file {path} could not be read as Parquet: {first}") from None
    frame.columns = [str(c) for c in frame.columns]
    for column in list(frame.columns):
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(frame[column].cat.categories.dtype)
    if id_column in frame.columns and pd.api.types.is_string_dtype(frame[id_column]) and \
            frame[id_column].notna().all():
        frame[id_column] = _plain_integers(frame[id_column].astype(str))
    for column in labels:
        if column in frame.columns:
            frame[column] = _labels_with_gaps(_as_written(frame[column]))
    for column in texts:
        if column in frame.columns and not pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].map(lambda v: v if pd.isna(v) else str(v))
    if id_column and number_rows:
        add_row_numbers(frame, id_column)
    return frame


def _as_written(values: pd.Series) -> pd.Series:
    """A stored label column as a CSV would hold it: text, with integers stored as floats
    (an integer column with an empty cell) written as integers, so 1.0 is the label 1."""
    present = values.dropna()
    integral = pd.api.types.is_float_dtype(values) and bool(np.all(np.mod(present, 1) == 0))
    return values.map(lambda v: v if pd.isna(v) else str(int(v)) if integral else str(v))


def add_row_numbers(frame: pd.DataFrame, id_column: str) -> bool:
    """Give ``frame`` an ``id_column`` numbering its rows from 1 in file order, unless it has
    one; True when it had none."""
    if id_column in frame.columns:
        return False
    frame.insert(0, id_column, range(1, len(frame) + 1))
    return True


def _missing_cells(header: pd.Index, id_column: str | None, labels: Sequence[str],
                   na_values: Sequence[str], texts: Sequence[str] = ()) -> dict[str, list[str]]:
    """The cells read as missing, per column: an empty cell anywhere; in an id column nothing
    else, and in a class label or text column ``na_values`` too, but not pandas' own words
    for missing ('NA', 'None', 'null', 'nan', 'N/A', ...), which are real ids, labels and
    texts there (North America's 'NA', a class 'None', an answer 'None' or a comment 'null'):
    read as missing, they were refused as empty ids or NaN targets, and a text became the
    empty text the model reads for a blank cell. Every other column keeps pandas' words and
    ``na_values``."""
    words = [*_PANDAS_NA, *na_values]
    cells = {str(c): words for c in header}
    for column in [*labels, *texts]:
        cells[column] = ["", *na_values]
    if id_column:
        cells[id_column] = [""]
    return cells


def class_labels(task: str, target_columns: Sequence[str]) -> list[str]:
    """The target columns that hold class labels, read as written (:func:`read_csv`): a
    binary or multiclass task's, and a multilabel task's one column (which may hold labels
    separated by spaces: 'None' or '01' is a label there); several multilabel columns hold
    0/1, a regression's numbers."""
    if task in ("binary", "multiclass") or (task == "multilabel" and len(target_columns) == 1):
        return list(target_columns)
    return []


def _labels(values: pd.Series) -> pd.Series:
    """Class labels read as text: kept as text when one is an integer written with leading
    zeros ('01'), else typed as pandas would have read them (integers, floats, booleans written
    True/False; other spellings of booleans stay as written), integers written as floats
    ('3.0') as integers."""
    numbers = _plain_integers(values)
    if numbers is not values or values.str.fullmatch(r"[+-]?0\d+").any():
        return numbers
    booleans = {"True": True, "TRUE": True, "true": True,
                "False": False, "FALSE": False, "false": False}
    if values.isin(list(booleans)).all():
        spellings = set(values.unique())
        # booleans write back as True/False: other spellings ('true', 'FALSE') stay text, so
        # a submission of labels holds the train file's own words (a scorer comparing text
        # finds no 'True' among 'true'); one column mixing spellings is read as booleans
        if spellings <= {"True", "False"} or len(spellings) > values.map(booleans).nunique():
            return values.map(booleans).astype(bool)
        return values
    try:
        numbers = pd.to_numeric(values)
    except (ValueError, TypeError):
        return values
    # labels a float column wrote ('3.0' for the class 3: PetFinder's AdoptionSpeed saved by
    # pandas with a gap) are the integers they name: as floats they were submitted as '3.0'
    # beside a sample of '3's, which a scorer comparing text counts as wrong
    if (pd.api.types.is_float_dtype(numbers) and np.all(np.mod(numbers, 1) == 0)
            and np.all(np.abs(numbers) < 2 ** 53)):
        return numbers.astype(np.int64)
    return numbers  # other floats are refused as classes later, with a reason


def _labels_with_gaps(values: pd.Series) -> pd.Series:
    """:func:`_labels` of the cells that hold one; with empty cells among them (unlabelled
    rows, 'competition.unlabelled_train_rows') the typed labels are kept as Python values
    of an object column, since a column of integers with a gap becomes floats: labels 0/1/2
    read as 0.0/1.0/2.0 were submitted as '1.0'. :func:`labels_typed` types the labelled
    rows again once the others are left out."""
    present = values.notna()
    if present.all():
        return _labels(values)
    out = pd.Series(None, index=values.index, dtype=object)
    out[present] = _labels(values[present]).astype(object)
    return out


def labels_typed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its label ``columns`` typed from the values they hold (an object
    column of Python integers as integers), once rows with empty labels are left out."""
    columns = [c for c in columns if c in frame.columns]
    if not columns:
        return frame
    return frame.assign(**{c: frame[c].infer_objects() for c in columns})


def template_columns(template: str | None) -> list[str]:
    """The columns an ``image_path`` template fills in (``{split}`` is none of them; a
    template that cannot be parsed names none here: it is refused where it is filled in).
    They name the image file, as an ``image_column`` does, so they are no features: a file
    name ('{split}/{file}') read as a category of one row each was memorised by the mlp
    beside the image encoder (a PetFinder-like probe: held-out RMSE 5.24 -> 6.37)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template or "") if f]
    except ValueError:
        return []
    return [f for f in dict.fromkeys(fields) if f != "split"]


def _plain_integers(values: pd.Series) -> pd.Series:
    """``values`` (text) as int64 when each is an integer written plainly ('12', '-3'), else
    as they are."""
    try:
        numbers = values.astype(np.int64)
    except (ValueError, TypeError, OverflowError):  # text, or a missing value (refused later)
        return values
    return numbers if (numbers.astype(str) == values).all() else values


# numbers as spreadsheets export them: '12.5%', and '1,234.5' with thousands separators;
# ISO dates and times, '2021-03-04' or '2021-03-04 17:30:00' (no time zone)
_PERCENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)%")
_THOUSANDS = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d*)?")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")
# a money sign before the number ('$1,250.00', Airbnb's prices), or one unit after it, the
# same in every row ('12 kg', '3.5km', '80 km/h'): a suffix every value shares says nothing
_CURRENCY = re.compile(r"[+-]?[$€£¥]\s?(\d{1,3}(,\d{3})+|\d+)(\.\d*)?")
_UNIT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)\s*([^\W\d_]+(/[^\W\d_]+)?)")
Reader = Callable[[pd.Series], pd.Series]


def parse_written_numbers(frames: Sequence[pd.DataFrame], columns: Sequence[str], sep: str = ",",
                          decimal: str = ".", thousands: str | None = None) -> list[str]:
    """Turn text columns whose every value, in every one of ``frames``, is a number written
    with a percent sign, thousands separators, a money sign or one shared unit, or an ISO
    date, into floats ('12.5%' -> 0.125, '1,234.5' -> 1234.5, '$1,250.00' -> 1250, '12 kg'
    -> 12, '1970-01-02 12:00' -> 1.5 days since 1970-01-01), in place; return their names.
    Read as text they were categories whose test values train never shows (every later
    date), so the model lost the feature. A date column also gets its calendar parts as
    columns of their own (:func:`add_date_parts`). A ';'-separated file often
    writes the decimal mark as ',' ('1,500' may be 1.5 there): its commas, and those of
    files read with another ``decimal`` mark, are left alone. A column of plain numbers
    with a few text cells gets those cells missing, with a warning
    (:func:`pipeline.stray_cells.stray_text_reader`), and is not among the names returned."""
    parsed = []
    for column in columns:
        cells = [f[column] for f in frames if column in f.columns]
        if not cells or all(pd.api.types.is_numeric_dtype(c) for c in cells):
            continue
        values = pd.concat(cells).dropna().astype(str).str.strip()
        reader = _number_reader(values, sep, decimal) if len(values) else None
        written = reader is not None  # else numbers among a few text cells, warned of apart
        if reader is None and len(values) and decimal == ",":  # '12,5%'; '3,5' among '?'
            reader, written = comma_numbers(values, column, _number_reader, stray_text_reader,
                                            thousands)
        if reader is None and len(values):  # '$1,250.00' among a few '-' cells
            reader = stray_numbers(values, column, lambda v: _number_reader(v, sep, decimal))
            written = reader is not None
        if reader is None and len(values):
            reader = stray_text_reader(values, column)
        if reader is None:
            continue
        for frame in frames:
            if column in frame.columns:
                text = frame[column].astype("string").str.strip()
                if isinstance(reader, DateReader):
                    add_date_parts(frame, column, reader.parse(text), values)
                frame[column] = reader(text)
        if written:
            parsed.append(column)
    return parsed


DATE_PARTS = ("year", "month", "day", "dayofweek", "dayofyear")


def add_date_parts(frame: pd.DataFrame, column: str, when: pd.Series,
                   every: pd.Series) -> None:
    """Columns ``<column>:year``, ``:month``, ``:day``, ``:dayofweek`` (Monday 0),
    ``:dayofyear`` (and ``:hour`` where some value of ``every``, the column's cells in all
    files, has a time of day) from its dates ``when``, beside ``column``. Days since 1970
    let a tree split time into periods, but not see a week's or a year's cycle (sales on
    Saturdays, in December), nor carry it to test dates later than every train date."""
    parts = [*DATE_PARTS, *(["hour"] if every.str.contains(r"[ T]\d", regex=True).any()
                            else [])]
    at = frame.columns.get_loc(column) + 1
    for part in parts:
        name = f"{column}:{part}"
        if name not in frame.columns:  # a file's own column of that name stays as it is
            frame.insert(at, name, getattr(when.dt, part).astype(np.float64))
            at += 1


def _number_reader(values: pd.Series, sep: str, decimal: str) -> Reader | None:
    """How to read ``values`` (text, none missing) as numbers, or None when some are not."""
    # every test below asks about each value (all, any, nunique), never how often it
    # occurs: the distinct values answer alike, and a code column of 140,000 cells and 5,000
    # values took 2 s of regex per load (every stage loads the competition) instead of 0.1
    values = values.drop_duplicates()
    if values.str.fullmatch(_PERCENT).all():
        return lambda text: pd.to_numeric(text.str.rstrip("%")).astype(np.float64) / 100
    if (sep != ";" and decimal == "." and values.str.fullmatch(_THOUSANDS).all()
            and values.str.contains(",", regex=False).any()):
        return lambda text: pd.to_numeric(text.str.replace(",", "", regex=False)).astype(
            np.float64)
    if sep != ";" and decimal == "." and values.str.fullmatch(_CURRENCY).all():
        return lambda text: pd.to_numeric(text.str.replace(r"[$€£¥,\s]", "", regex=True)
                                          ).astype(np.float64)
    units = values.str.extract(f"^{_UNIT.pattern}$")
    if decimal == "." and units[0].notna().all() and units[1].nunique() == 1:
        return lambda text: pd.to_numeric(text.str.extract(f"^({_UNIT.pattern})$")[0].str
                                          .replace(r"[^\d.+-]", "", regex=True)
                                          ).astype(np.float64)
    written = date_format(values)
    if written is None:
        return None
    try:
        pd.to_datetime(values, format=written)
    except ValueError:  # '2021-13-45': a code shaped like a date
        return None
    return DateReader(written)


@dataclass(frozen=True)
class DateReader:
    """Dates in one ``format`` ('ISO8601' or strptime's) as days since 1970-01-01."""

    format: str
    stray: frozenset[str] = frozenset()  # a few text cells ('?', 'unknown'): missing dates

    def parse(self, text: pd.Series) -> pd.Series:
        return pd.to_datetime(text.where(~text.isin(self.stray)), format=self.format)

    def __call__(self, text: pd.Series) -> pd.Series:
        return ((self.parse(text) - pd.Timestamp(0)) / pd.Timedelta(days=1)).astype(np.float64)


def date_format(values: pd.Series) -> str | None:
    """The one format every value is a date in: ISO ('2021-03-04', '2021-03-04 17:30:00'),
    '2021/03/04', or day and month in the order the values prove ('25/12/2021' is day first,
    '12/25/2021' month first; '04.03.2021' with dots; a time after them as '17:30', '17:30:00'
    or '5:30:00 PM', the same in every value). None where they are no dates, the order stays
    open (every day and month 12 or less) or values differ in shape."""
    if values.str.fullmatch(_ISO_DATE).all():
        return "ISO8601"
    parts = values.str.extract(_WRITTEN_DATE)
    if parts[0].isna().any():
        return None
    shapes = parts[4].map(_clock_shape)
    if parts[1].nunique() != 1 or shapes.nunique() != 1:
        return None
    sep, clock = parts[1].iloc[0], shapes.iloc[0]
    time = " " + _CLOCKS.get(clock, "") if clock else ""
    if time == " ":  # a time of another shape
        return None
    if len(parts[0].iloc[0]) == 4:  # year first: year/month/day
        return f"%Y{sep}%m{sep}%d{time}"
    first, second = parts[0].astype(int), parts[2].astype(int)
    if (first > 12).any() and (second <= 12).all():
        return f"%d{sep}%m{sep}%Y{time}"
    if (second > 12).any() and (first <= 12).all():
        return f"%m{sep}%d{sep}%Y{time}"
    return None


def _clock_shape(clock: str) -> str:
    """'17:30' -> '9:9', ' 5:30:00 pm' -> '9:9:9 AM': the time's shape, AM for either half."""
    return re.sub(r"[AaPp][Mm]$", "AM", re.sub(r"\d+", "9", clock.strip()))


# a date written with '/' or '.', day and month in either order or the year first, and a
# time of day (each shape its strptime format)
_WRITTEN_DATE = (r"^(\d{1,2}|\d{4})([/.])(\d{1,2})\2(\d{4}|\d{1,2})"
                 r"((?:[ T]\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?)?)$")
_CLOCKS = {"9:9": "%H:%M", "9:9:9": "%H:%M:%S", "9:9 AM": "%I:%M %p",
           "9:9:9 AM": "%I:%M:%S %p", "9:9AM": "%I:%M%p", "9:9:9AM": "%I:%M:%S%p"}

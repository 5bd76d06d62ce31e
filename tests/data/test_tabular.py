"""The tabular encoding (pipeline/data/tabular.py): median fill, standardisation, NaN indicator
columns, category codes with 0 for unseen or missing values, categories that do not depend on
how pandas typed a column, the pickled round trip a fold keeps, and unseen-category shares."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from pipeline.data.tabular import (
    TabularEncoder,
    column_encoder,
    normalise_categories,
    unseen_shares,
)

TRAIN = pd.DataFrame({
    "a": [1.0, 2.0, np.nan, 5.0],  # median of the known values: 2.0
    "b": [10.0, 10.0, 10.0, 10.0],  # constant: std 0 -> scale 1
    "c": ["x", "y", None, "x"],
    "d": [3, 1, 2, 3],  # a categorical column given as numbers
})
FILLED_A = np.array([1.0, 2.0, 2.0, 5.0])  # 'a' after the median fill


def _fitted() -> TabularEncoder:
    return TabularEncoder(["a", "b"], ["c", "d"]).fit(TRAIN)


def test_fit_learns_widths_and_table_sizes() -> None:
    enc = _fitted()
    assert enc.n_numeric == 3  # two numbers + one indicator: only 'a' has NaN in training
    # index 0 is kept for unseen / missing values, 1.. for the training categories
    assert enc.cardinalities[1] == 4  # '1', '2', '3'
    assert enc.cardinalities[0] >= 3  # 'x', 'y' (a table may keep a row for missing)


def test_transform_standardises_fills_flags_and_codes() -> None:
    enc = _fitted()
    out = enc.transform(TRAIN)
    assert out["num"].dtype == np.float32 and out["cat"].dtype == np.int64
    assert out["num"].shape == (4, 3) and out["cat"].shape == (4, 2)
    np.testing.assert_allclose(out["num"][:, 0], (FILLED_A - FILLED_A.mean()) / FILLED_A.std(),
                               rtol=1e-6)
    np.testing.assert_array_equal(out["num"][:, 1], 0.0)  # constant column: centred, not NaN
    np.testing.assert_array_equal(out["num"][:, 2], [0, 0, 1, 0])  # the NaN indicator
    np.testing.assert_array_equal(out["cat"], [[1, 3], [2, 1], [0, 2], [1, 3]])
    assert (out["cat"] < np.array(enc.cardinalities)).all()  # every code has a table row


def test_unseen_values_and_missing_cells_at_transform() -> None:
    enc = _fitted()
    new = pd.DataFrame({"a": [np.nan, "7"], "b": [12.0, np.nan], "c": ["z", "y"],
                        "d": [9, 2.0]})
    out = enc.transform(new)
    expected = (np.array([2.0, 7.0]) - FILLED_A.mean()) / FILLED_A.std()  # NaN -> median
    np.testing.assert_allclose(out["num"][:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(out["num"][:, 1], [2.0, 0.0])  # NaN in 'b' takes the median
    np.testing.assert_array_equal(out["num"][:, 2], [1, 0])
    # unseen 'z' and 9 -> 0; 2.0 read as a float is the training category 2
    np.testing.assert_array_equal(out["cat"], [[0, 0], [2, 2]])


def test_categories_do_not_depend_on_how_pandas_typed_them() -> None:
    frame = pd.DataFrame({"f": [3.0, np.nan, 1.5], "i": [3, 4, 5], "s": ["3", None, "x"],
                          "b": [True, False, True]})
    out = normalise_categories(frame)
    assert out["f"].tolist()[0] == "3" and np.isnan(out["f"].tolist()[1])
    assert out["f"].tolist()[2] == "1.5"
    assert out["i"].tolist() == ["3", "4", "5"]
    assert out["s"].tolist()[0] == "3" and out["s"].isna().tolist() == [False, True, False]
    assert out["b"].tolist() == ["True", "False", "True"]


def test_no_columns_give_empty_inputs_and_transform_needs_fit() -> None:
    out = TabularEncoder([], []).fit(TRAIN).transform(TRAIN)
    assert out["num"].shape == (4, 0) and out["cat"].shape == (4, 0)
    assert out["num"].dtype == np.float32 and out["cat"].dtype == np.int64
    with pytest.raises(ValueError, match="before fit"):
        TabularEncoder(["a"], []).transform(TRAIN)


def test_pickled_encoder_transforms_the_same() -> None:
    enc = _fitted()
    again = pickle.loads(pickle.dumps(enc))  # a fold keeps it as tabular.joblib
    assert (again.n_numeric, again.cardinalities) == (enc.n_numeric, enc.cardinalities)
    frame = TRAIN.assign(c=["y", "q", "x", None])
    for key, value in enc.transform(frame).items():
        np.testing.assert_array_equal(again.transform(frame)[key], value)


def test_column_encoder_for_scikit_learn_models_keeps_nan_and_unseen_as_minus_one() -> None:
    encoder = column_encoder(["a"], ["c"], scale=False, impute=False, indicators=False)
    out = encoder.fit(TRAIN).transform(pd.DataFrame({"a": [np.nan, 4.0], "c": ["y", "z"]}))
    assert out.shape == (2, 2)
    assert np.isnan(out[0, 0]) and out[1, 0] == 4.0  # unscaled, NaN kept for the estimator
    assert out[:, 1].tolist() == [1.0, -1.0]  # 'y' is code 1; unseen 'z' is -1


def test_unseen_shares_count_test_values_never_seen_in_train() -> None:
    test = pd.DataFrame({"c": ["x", "z", None, "w"], "d": [3.0, 1.0, 2.0, 2.0]})
    shares = unseen_shares(TRAIN, test, ["c", "d"])
    assert shares == {"c": pytest.approx(2 / 3), "d": 0.0}  # missing values are not counted


# --- issue 12 item 1: one category however pandas typed the column -------------------------------


def _integer_codes_from_csv(tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An integer-coded category written to CSV: train has a NaN, so pandas reads it as floats
    (3.0), test has none and reads it as integers (3), as load_competition reads them."""
    pd.DataFrame({"k": [3, 1, None, 2, 3, 1], "x": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]}).to_csv(
        tmp_path / "train.csv", index=False)
    pd.DataFrame({"k": [1, 3, 2, 7], "x": [1.0, 2.0, 3.0, 4.0]}).to_csv(
        tmp_path / "test.csv", index=False)
    train, test = pd.read_csv(tmp_path / "train.csv"), pd.read_csv(tmp_path / "test.csv")
    # control: the two files really disagree on the column's type
    assert train["k"].dtype == np.float64 and test["k"].dtype == np.int64
    return train, test


def test_integer_category_read_as_float_in_train_and_int_in_test_keeps_its_codes(
        tmp_path) -> None:
    """issue 12 item 1: test rows of an integer-coded category get the codes of the same values in
    train, not 0 (the old encoder compared the strings '3.0' and '3' and called every test
    value unseen)."""
    train, test = _integer_codes_from_csv(tmp_path)
    enc = TabularEncoder(["x"], ["k"]).fit(train)
    codes_train = enc.transform(train)["cat"][:, 0]
    codes_test = enc.transform(test)["cat"][:, 0]
    by_value = {v: c for v, c in zip(train["k"], codes_train, strict=True) if pd.notna(v)}
    assert sorted(by_value.values()) == [1, 2, 3]  # training categories 1..k, one per value
    assert all(by_value[v] == c for v, c in zip(train["k"], codes_train, strict=True)
               if pd.notna(v))  # each value one code
    assert codes_train[2] == 0  # the training NaN: missing shares code 0 with unseen values
    # 1, 3, 2 are training categories: the same codes as their train rows; 7 is unseen
    np.testing.assert_array_equal(codes_test, [by_value[1.0], by_value[3.0], by_value[2.0], 0])
    assert enc.cardinalities == [4]  # 3 categories + the shared 0, NaN in train adds none


def test_cardinalities_are_categories_plus_one_with_nan_in_training() -> None:
    """issue 12 item 1: a training NaN is no category: table size k + 1, codes 1..k for the
    training values and 0 for missing or unseen ones, every code inside its table."""
    frame = pd.DataFrame({"c": ["x", "y", None, "x", "z"], "f": [2.0, np.nan, 2.0, 5.0, 9.0]})
    enc = TabularEncoder([], ["c", "f"]).fit(frame)
    assert enc.cardinalities == [4, 4]  # x, y, z and 2, 5, 9, each + 1
    cat = enc.transform(frame)["cat"]
    assert cat[2, 0] == 0 and cat[1, 1] == 0  # the NaN cells
    assert set(cat[[0, 1, 3, 4], 0]) == {1, 2, 3} and set(cat[[0, 2, 3, 4], 1]) == {1, 2, 3}
    unseen = enc.transform(pd.DataFrame({"c": ["w", None], "f": [4.0, None]}))["cat"]
    np.testing.assert_array_equal(unseen, [[0, 0], [0, 0]])
    assert (cat < np.array(enc.cardinalities)).all()


def test_normalise_categories_maps_every_spelling_of_three_to_one_string() -> None:
    """issue 12 item 1: 3, 3.0, '3' (and NumPy scalars of them) are the category '3' within one
    column too; None and NaN stay missing rather than becoming the string 'nan'."""
    column = pd.Series([3, 3.0, "3", np.int64(3), np.float32(3.0), None, np.nan, "3.5", 3.5],
                       dtype=object)
    out = normalise_categories(pd.DataFrame({"k": column}))["k"]
    assert out.tolist()[:5] == ["3"] * 5
    assert out.isna().tolist() == [False] * 5 + [True, True] + [False] * 2
    assert out.tolist()[7:] == ["3.5", "3.5"]
    assert out.dtype == object


def test_a_whole_float_written_as_text_is_the_same_category() -> None:
    """A code column listed in 'categorical_columns' (so left as written) with a '?' cell in
    test only: test reads it as text ('3.0'), train as floats (3.0 -> '3'), and every test
    value was unseen. '3.0' is '3' now; other texts keep their spelling."""
    train = pd.DataFrame({"k": [1.0, 2.0, np.nan, 3.0]})
    test = pd.DataFrame({"k": ["1.0", "2.0", "?", "3.00"]})
    assert unseen_shares(train, test, ["k"]) == {"k": pytest.approx(0.25)}  # the '?' alone
    column = pd.Series(["3.0", "-2.0", "0.0", "10.00", "3.5", "03.0", "x.0", "1e3"])
    assert normalise_categories(pd.DataFrame({"k": column}))["k"].tolist() == [
        "3", "-2", "0", "10", "3.5", "03.0", "x.0", "1e3"]
    encoder = TabularEncoder([], ["k"]).fit(train)
    np.testing.assert_array_equal(encoder.transform(test)["cat"][:, 0], [1, 2, 0, 3])


def test_unseen_shares_ignore_how_pandas_typed_the_column(tmp_path) -> None:
    """issue 12 item 1: the unseen share compares values, not dtypes: of test's 1, 3, 2, 7 only 7
    is unseen (train's NaN made it 1.0, 3.0, 2.0)."""
    train, test = _integer_codes_from_csv(tmp_path)
    assert unseen_shares(train, test, ["k"]) == {"k": pytest.approx(0.25)}
    assert unseen_shares(test, train, ["k"]) == {"k": 0.0}  # train's NaN is not unseen


def test_joblib_round_trip_keeps_codes_and_scaling(tmp_path) -> None:
    """issue 12 item 1: a fold saves its encoder with joblib (tabular.joblib); the loaded one gives
    the same arrays, the float/int category match included."""
    import joblib

    train, test = _integer_codes_from_csv(tmp_path)
    enc = TabularEncoder(["x"], ["k"]).fit(train)
    joblib.dump(enc, tmp_path / "tabular.joblib")
    again = joblib.load(tmp_path / "tabular.joblib")
    assert (again.n_numeric, again.cardinalities) == (enc.n_numeric, enc.cardinalities)
    for frame in (train, test):
        for key, value in enc.transform(frame).items():
            np.testing.assert_array_equal(again.transform(frame)[key], value)
    np.testing.assert_array_equal(again.transform(test)["cat"][:3, 0] > 0, True)


def test_numbers_are_median_filled_standardised_with_ddof_0_and_flagged_where_nan() -> None:
    """issue 12 item 1: numbers keep the documented encoding: median fill, (x - mean) / std with
    ddof 0 over the filled column, and an indicator only for columns with NaN in training."""
    frame = pd.DataFrame({"a": [1.0, np.nan, 4.0, 10.0], "b": [0.0, 1.0, 2.0, 3.0]})
    enc = TabularEncoder(["a", "b"], []).fit(frame)
    assert enc.n_numeric == 3  # a, b, a's indicator (b has no NaN in training: no column)
    filled = np.array([1.0, 4.0, 4.0, 10.0])  # median of 1, 4, 10 is 4
    num = enc.transform(frame)["num"]
    np.testing.assert_allclose(num[:, 0], (filled - filled.mean()) / filled.std(ddof=0),
                               rtol=1e-6)
    np.testing.assert_allclose(num[:, 1], (frame["b"] - 1.5) / np.sqrt(1.25), rtol=1e-6)
    np.testing.assert_array_equal(num[:, 2], [0, 1, 0, 0])
    new = enc.transform(pd.DataFrame({"a": [4.0], "b": [np.nan]}))["num"]
    # a NaN in 'b' only at transform: median-filled (1.5 -> 0 after scaling), no new flag
    np.testing.assert_allclose(new, [[(4.0 - filled.mean()) / filled.std(), 0.0, 0.0]],
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rows", [1, 2, 7, 400])
def test_median_fill_matches_scikit_learns_median_imputer(rows: int) -> None:
    """MedianFill replaced SimpleImputer(strategy="median") for speed: the same statistics
    (even counts averaged, an all-missing column filled with 0) and the same filled values."""
    from sklearn.impute import SimpleImputer

    from pipeline.data.tabular import MedianFill

    rng = np.random.default_rng(rows)
    train = rng.normal(size=(rows, 5)).round(1)
    train[rng.random(train.shape) < 0.2] = np.nan
    train[:, 4] = np.nan
    test = rng.normal(size=(30, 5))
    test[rng.random(test.shape) < 0.3] = np.nan
    reference = SimpleImputer(strategy="median", keep_empty_features=True).fit(train)
    fill = MedianFill().fit(train)
    assert np.array_equal(fill.statistics_, reference.statistics_)
    assert np.array_equal(fill.transform(test), reference.transform(test))
    assert not np.isnan(fill.transform(test)).any()


def test_numbers_parse_text_and_pass_numeric_columns_through() -> None:
    from pipeline.data.tabular import numbers_as_floats as _numbers

    numeric = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan], "c": [True, False],
                            "d": pd.array([3, None], dtype="Int64")})
    assert _numbers(numeric).equals(numeric.apply(pd.to_numeric).astype(np.float64))
    mixed = pd.DataFrame({"a": ["1", "x"], "b": [2.0, 3.0]})
    assert _numbers(mixed).to_numpy().tolist()[0] == [1.0, 2.0]
    assert np.isnan(_numbers(mixed).iloc[1, 0])


def test_infinite_numbers_are_missing_values() -> None:
    # an 'inf' cell in a CSV crashed scikit-learn models and XGBoost ("Input X contains
    # infinity") and became NaN after the network's scaler, for every row of the column
    from pipeline.data.tabular import numbers_as_floats as _numbers

    for frame in (pd.DataFrame({"a": [1.0, np.inf, -np.inf, 4.0], "b": [0.5, 1.0, 2.0, 3.0]}),
                  pd.DataFrame({"a": ["1", "inf", "-inf", "4"], "b": [0.5, 1.0, 2.0, 3.0]})):
        out = _numbers(frame)
        assert out["a"].isna().tolist() == [False, True, True, False]
        assert out["b"].tolist() == [0.5, 1.0, 2.0, 3.0]
    train = pd.DataFrame({"a": [1.0, np.inf, 3.0, 5.0], "c": ["x", "y", "x", "y"]})
    encoded = TabularEncoder(["a"], ["c"]).fit(train).transform(train)["num"]
    assert np.isfinite(encoded).all() and encoded[:, 1].tolist() == [0, 1, 0, 0]  # flagged
    codes = column_encoder(["a"], [], scale=False, impute=True, indicators=False)
    assert codes.fit_transform(train[["a"]])[:, 0].tolist() == [1.0, 3.0, 3.0, 5.0]


def test_numbers_too_large_to_square_are_missing_values() -> None:
    """A '1e308' cell: the scaler's variance overflowed to inf and the column's values were
    NaN, so a network's outputs were NaN from its first epoch (refused as a diverged fit)."""
    from pipeline.data.tabular import numbers_as_floats

    frame = pd.DataFrame({"a": [1.0, 1e308, -1e200, 1e100, 4.0]})
    assert numbers_as_floats(frame)["a"].isna().tolist() == [False, True, True, False, False]
    encoded = TabularEncoder(["a"], []).fit(frame).transform(frame)["num"]
    assert np.isfinite(encoded).all()


def _one_by_one(column: pd.Series) -> list:
    """The normalisation as it was written first: every cell through ``_category``."""
    from pipeline.data.encodings import _category

    return [_category(v) for v in column.astype(object)]


@pytest.mark.parametrize("column", [
    pd.Series([3, 1, 2, 3, 1]),
    pd.Series([3.0, np.nan, 1.5, 3.0, -0.0, 0.0]),
    pd.Series(np.array([1.0, 2.0, 2.5], dtype=np.float32)),
    pd.Series([True, False, True]),
    pd.Series([True, np.nan, False], dtype=object),
    pd.Series(["b", None, "a", "b", np.nan]),
    pd.Series(["b", "a", None], dtype="str"),
    pd.Series(["x", "y", "x"], dtype="category"),
    pd.Series([3, 3.0, "3", np.int64(3), np.float32(3.0), None, np.nan, "3.5", 3.5], dtype=object),
    pd.Series([True, 1, 1.0, False, 0, "1", None], dtype=object),  # True == 1: kept apart
    pd.Series([], dtype=object),
], ids=["int", "float", "float32", "bool", "bool-nan", "object-str", "str", "category",
        "spellings", "bools-and-numbers", "empty"])
def test_normalise_categories_gives_what_each_cell_through_category_gives(column) -> None:
    """The distinct values are normalised once and spread by their codes (seconds less a fold
    on a large table): every cell ends as the value-by-value normalisation left it, a bool
    beside the number it equals included (True == 1, yet "True" is not "1")."""
    out = normalise_categories(pd.DataFrame({"k": column}))["k"]
    expected = _one_by_one(column)
    assert out.dtype == object and len(out) == len(expected)
    assert [None if pd.isna(v) else v for v in out] == [
        None if pd.isna(v) else v for v in expected]


def test_normalise_categories_normalises_each_distinct_value_once(monkeypatch) -> None:
    """200,000 rows of 3 categories: 3 calls of the per-value normalisation, not 200,000."""
    from pipeline.data import encodings

    calls = []
    real = encodings._category
    monkeypatch.setattr(encodings, "_category", lambda v: calls.append(v) or real(v))
    column = pd.Series(np.random.default_rng(0).choice(["a", "b", "c"], 200_000))
    out = normalise_categories(pd.DataFrame({"k": column}))["k"]
    assert sorted(calls) == ["a", "b", "c"]
    assert out.tolist() == column.tolist()


def test_category_codes_give_scikit_learns_ordinal_codes() -> None:
    """CategoryCodes replaced OrdinalEncoder(unknown and missing -> -1) for speed: the same
    categories_ (sorted, a training NaN last) and the same codes for seen, unseen and missing
    values, from a frame and from an array."""
    from sklearn.preprocessing import OrdinalEncoder

    from pipeline.data.tabular import CategoryCodes

    rng = np.random.default_rng(0)
    train = normalise_categories(pd.DataFrame({
        "a": rng.choice(["x", "y", "z", None], 500), "b": rng.integers(0, 40, 500),
        "c": rng.choice(["only"], 500)}))
    test = normalise_categories(pd.DataFrame({
        "a": rng.choice(["x", "w", None], 200), "b": rng.integers(20, 60, 200),
        "c": rng.choice(["only", "new"], 200)}))
    reference = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                               encoded_missing_value=-1, dtype=np.float64).fit(train)
    codes = CategoryCodes().fit(train)
    assert len(codes.categories_) == 3
    for ours, theirs in zip(codes.categories_, reference.categories_, strict=True):
        assert [None if pd.isna(v) else v for v in ours] == [
            None if pd.isna(v) else v for v in theirs]
    for frame in (train, test):
        np.testing.assert_array_equal(codes.transform(frame), reference.transform(frame))
        np.testing.assert_array_equal(codes.transform(frame.to_numpy()),
                                      reference.transform(frame))
    assert (codes.transform(test)[:, 2] == -1).sum() == (test["c"] == "new").sum() > 0
    assert codes.transform(train.iloc[:0]).shape == (0, 3)



def test_folds_pickled_before_the_rename_still_find_their_number_coercion() -> None:
    """A fold's tabular.joblib pickles its FunctionTransformer's function by module and name:
    an encoder written before ``numbers_as_floats`` had that name refers to ``_numbers``,
    and still loads and transforms the same."""
    enc = TabularEncoder(["a", "b"], ["c", "d"]).fit(TRAIN)
    new = pickle.dumps(enc, protocol=0)  # protocol 0 names globals as plain text lines
    assert b"\nnumbers_as_floats\n" in new
    old = pickle.loads(new.replace(b"\nnumbers_as_floats\n", b"\n_numbers\n"))
    for key, value in enc.transform(TRAIN).items():
        np.testing.assert_array_equal(old.transform(TRAIN)[key], value)

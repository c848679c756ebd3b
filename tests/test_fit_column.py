"""``tailscope fit --column NAME|INDEX``: one column of a CSV, semicolon or whitespace table."""

import json

import numpy as np
import pytest
from cli_helpers import cli, user_error

from tailscope import fit_power_law


def _table(tmp_path, sep, header=True):
    rng = np.random.default_rng(0)
    a = np.arange(1, 301)
    b = np.floor((1 - rng.random(300)) ** (-1 / 1.5) * 10).astype(int)  # whole numbers
    lines = [sep.join(("id", "count"))] if header else []
    lines += [sep.join((str(i), str(j))) for i, j in zip(a, b)]
    path = tmp_path / f"t{len(sep)}{sep.strip() or 'ws'}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, b.astype(float)


@pytest.mark.parametrize("sep", [",", ";", " ", "\t"])
@pytest.mark.parametrize("column", ["count", "1", "-1"])
def test_a_column_of_whole_numbers_is_read_as_a_column(tmp_path, capsys, sep, column):
    path, b = _table(tmp_path, sep)
    code, out, _ = cli(capsys, "fit", str(path), "--column", column, "--json")
    assert code == 0
    got = json.loads(out)
    ref = fit_power_law(b)
    assert (got["alpha"], got["xmin"], got["n"]) == (ref.alpha, ref.xmin, b.size)


def test_without_a_header_by_index(tmp_path, capsys):
    path, b = _table(tmp_path, ",", header=False)
    code, out, _ = cli(capsys, "fit", str(path), "--column", "1", "--json")
    assert code == 0 and json.loads(out)["alpha"] == fit_power_law(b).alpha
    # without --column the two-column line is refused, and the message names --column
    user_error(capsys, "fit", str(path), naming="--column")


@pytest.mark.parametrize("column, naming", [("nope", "no such column"), ("5", "2 column"),
                                            ("id", None)])
def test_bad_columns_are_one_line_errors(tmp_path, capsys, column, naming):
    path, _ = _table(tmp_path, ",")
    if column == "id":  # a column that holds a non-number further down
        text = path.read_text().replace("\n7,", "\nx7,")
        path.write_text(text)
        user_error(capsys, "fit", str(path), "--column", "id", naming="line 8")
    else:
        user_error(capsys, "fit", str(path), "--column", column, naming=naming)


def test_ragged_rows_are_refused(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text("1,2\n3\n")
    user_error(capsys, "fit", str(path), "--column", "0", naming="line 2")

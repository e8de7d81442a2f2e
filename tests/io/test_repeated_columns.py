"""A Parquet file with a repeated column name is refused when it is opened, by name."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import streammix as sm
from streammix.cli import main


@pytest.fixture
def repeated(tmp_path, blobs):
    """The blobs in columns f0, f1, f0 (pyarrow writes repeated names as they are)."""
    path = tmp_path / "repeated.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(blobs[:, j]) for j in range(3)],
                                        names=["f0", "f1", "f0"]), path)
    return path


@pytest.fixture
def model_file(tmp_path, blobs_parquet):
    """A model with a calibrated threshold, fitted by the command line on good data."""
    fitted = CliRunner().invoke(main, ["fit", str(blobs_parquet), "-k", "2", "--seed", "0",
                                       "--contamination", "0.05", "-o", str(tmp_path / "m.npz")])
    assert fitted.exit_code == 0, fitted.output
    return tmp_path / "m.npz"


def test_the_reader_names_the_file_and_the_repeated_column(repeated, blobs):
    message = rf"{repeated}, column 'f0': is the name of 2 columns of this file"
    with pytest.raises(sm.DataError, match=message):
        sm.read_parquet(repeated)
    with pytest.raises(sm.DataError, match=message):  # even when another column is chosen
        sm.read_parquet(repeated, columns=["f1"])
    with pytest.raises(sm.DataError, match=message):
        sm.GaussianMixture(2).fit(repeated)
    model = sm.GaussianMixture(2, random_state=0).fit(blobs[:, :3])
    with pytest.raises(sm.DataError, match=message):
        model.score_samples(repeated)
    scorer = sm.AnomalyScorer(model, contamination=0.05).fit(blobs[:, :3])
    with pytest.raises(sm.DataError, match=message):
        scorer.score_samples(repeated)


def test_a_later_file_of_a_folder_with_a_repeated_column_is_named(tmp_path, blobs):
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.table({"f0": blobs[:, 0], "f1": blobs[:, 1]}), folder / "a.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array(blobs[:, 0]), pa.array(blobs[:, 1]),
                                         pa.array(blobs[:, 1])], names=["f0", "f1", "f1"]),
                   folder / "b.parquet")
    with pytest.raises(sm.DataError, match=r"b\.parquet, column 'f1': is the name of 2 "):
        sm.read_parquet(folder, columns=["f0"])


@pytest.mark.parametrize("command", ["fit", "score", "predict"])
def test_the_command_line_refuses_it_in_one_line(repeated, model_file, tmp_path, command):
    args = {"fit": ["fit", str(repeated), "-k", "2", "-o", str(tmp_path / "new.npz")],
            "score": ["score", str(model_file), str(repeated), "-o", str(tmp_path / "s.parquet")],
            "predict": ["predict", str(model_file), str(repeated),
                        "-o", str(tmp_path / "p.parquet")]}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not a KeyError's traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == f"Error: {repeated}, column 'f0': is the name of 2 columns of this " \
                       "file; give each column its own name"
    assert not any(p.name.startswith(("new.", "s.", "p.")) for p in tmp_path.iterdir())

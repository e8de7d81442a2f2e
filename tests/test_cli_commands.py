"""The rest of the command line: help, make-data, fit, predict, select, sample, plot, info."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import streammix as sm
from streammix.cli import main
from tests.estimators.test_selection import textbook

PNG = b"\x89PNG\r\n\x1a\n"


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ok(*args, **kwargs):
    result = run(*args, **kwargs)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("command", ["fit", "predict", "score", "calibrate", "select", "sample",
                                     "info", "plot", "make-data"])
def test_every_command_has_help_with_examples(command):
    text = ok(command, "--help").output
    assert "Example" in text and f"streammix {command}" in text


def test_make_data_formats(tmp_path):
    ok("make-data", tmp_path / "pq", "--rows", 5000, "--features", 3, "--components", 2,
       "--row-group-rows", 1000, "--files", 2)
    files = sorted((tmp_path / "pq").iterdir())
    assert len(files) == 2 and sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 5000
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 3
    ok("make-data", tmp_path / "z.zarr", "--format", "zarr", "--rows", 3000, "--features", 2,
       "--row-group-rows", 700)
    assert sm.read_zarr(str(tmp_path / "z.zarr")).feature_names == ("x0", "x1")
    out = ok("make-data", "-", "--format", "jsonl", "--rows", 200, "--features", 2,
             "--anomalies", 0.1, "--seed", 3).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == list(range(200))
    assert 5 <= sum(r["injected"] for r in records) <= 40


@pytest.fixture
def data(tmp_path):
    X = textbook()
    table = pa.table({"id": np.arange(len(X)) * 10, "a": X[:, 0], "b": X[:, 1]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=300)
    return tmp_path / "t.parquet", X


@pytest.mark.parametrize("kind", ["gmm", "bayesian-gmm", "kmeans", "minibatch-kmeans"])
def test_fit_each_model_then_info_and_predict(tmp_path, data, kind):
    path, X = data
    ok("fit", path, "--model", kind, "-k", 3, "--columns", "a,b", "--seed", 0,
       "-o", tmp_path / "m.npz")
    model = sm.load(tmp_path / "m.npz")
    assert model.n_features_in_ == 2
    info = json.loads(ok("info", tmp_path / "m.npz", "--json").stdout)
    assert info["model"] == type(model).__name__ and info["feature_names"] == ["a", "b"]
    assert "features: a, b" in ok("info", tmp_path / "m.npz").stdout
    args = ["predict", tmp_path / "m.npz", path, "-o", tmp_path / "p.parquet"]
    ok(*args, *(["--proba"] if "gmm" in kind else []))
    table = pq.read_table(tmp_path / "p.parquet")
    np.testing.assert_array_equal(table.column("id").to_numpy(), np.arange(len(X)) * 10)
    # the command runs model.predict's per-row code on its chunks: the same labels
    np.testing.assert_array_equal(table.column("cluster").to_numpy(), model.predict(X))
    if "gmm" in kind:
        proba = np.column_stack([table.column(f"p{k}").to_numpy() for k in range(3)])
        np.testing.assert_allclose(proba, model.predict_proba(X), atol=1e-12)


def test_bayesian_gmm_priors_info_lists_the_effective_components_and_plot(tmp_path, data):
    path, _ = data
    ok("fit", path, "--model", "bayesian-gmm", "-k", 8, "--columns", "a,b", "--seed", 0,
       "--weight-concentration-prior", "0.001", "--mean-prior", "0,0", "--max-iter", 500,
       "--covariance-prior", "1", "--weight-prior-type", "dirichlet_process",
       "-o", tmp_path / "b.npz")
    model = sm.load(tmp_path / "b.npz")
    assert model.weight_concentration_prior_ == 0.001
    np.testing.assert_array_equal(model.covariance_prior_, np.eye(2))
    effective = model.effective_components()
    assert len(effective) == 3  # the data's three clusters
    text = ok("info", tmp_path / "b.npz").stdout
    assert f"effective components: 3 of 8 (weight above 1%): " \
           f"{', '.join(map(str, effective))}" in text
    assert json.loads(ok("info", tmp_path / "b.npz", "--json").stdout)[
        "effective_components"] == effective.tolist()
    ok("plot", tmp_path / "b.npz", path, "-o", tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG
    refused = run("fit", path, "-k", 3, "--mean-prior", "0,0", "-o", tmp_path / "g.npz")
    assert refused.exit_code == 2 and "for --model bayesian-gmm" in refused.output


def test_sklearn_bayesian_posterior_counts_the_rows():
    """The identity ``info`` reads the rows from: beta_k = beta_0 + N_k, so the N_k sum to
    the number of rows (scikit-learn's own fit)."""
    from sklearn.mixture import BayesianGaussianMixture

    X = textbook()
    bgm = BayesianGaussianMixture(n_components=6, random_state=0, max_iter=300).fit(X)
    rows = bgm.mean_precision_ - bgm.mean_precision_prior_
    assert rows.sum() == pytest.approx(len(X), rel=1e-9)


def test_info_on_a_bayesian_model_hides_empty_components_and_shows_the_bound_per_row(tmp_path):
    X = textbook()
    bgm = sm.BayesianGaussianMixture(12, weight_concentration_prior=1e-3, max_iter=500,
                                     random_state=0).fit(X)
    bgm.save(tmp_path / "b.npz")
    rows = bgm.mean_precision_ - bgm.mean_precision_prior_
    # the documented rule: under 0.1 % of the weight, or under one row's worth
    shown = [k for k in range(12) if bgm.weights_[k] >= 1e-3 and rows[k] >= 1]
    assert 3 <= len(shown) < 12  # some are hidden, the data's clusters are not
    text = ok("info", tmp_path / "b.npz").stdout
    listed = [int(line.split(":")[0]) for line in text.splitlines() if line.startswith("  ")
              and line.strip()[0].isdigit()]
    assert listed == shown
    assert f"({12 - len(shown)} components of about zero weight not shown: --all" in text
    every = ok("info", tmp_path / "b.npz", "--all").stdout
    assert [int(line.split(":")[0]) for line in every.splitlines()
            if line.startswith("  ") and line.strip()[0].isdigit()] == list(range(12))
    assert "not shown" not in every
    # the bound per row, as the GaussianMixture's lower_bound_ is one
    info = json.loads(ok("info", tmp_path / "b.npz", "--json").stdout)
    assert info["training_rows"] == pytest.approx(len(X), rel=1e-9)
    assert info["lower_bound_per_row"] == pytest.approx(bgm.lower_bound_ / len(X), rel=1e-12)
    assert f"lower bound {bgm.lower_bound_ / len(X):.6f} per row" in text


def test_select_gmm_picks_textbook_answer_and_plots(tmp_path, data):
    path, _ = data
    result = ok("select", path, "--columns", "a,b", "-k", "1..6", "--seed", 0, "-o",
                tmp_path / "best.npz", "--plot", tmp_path / "bic.png")
    # a header, one line per candidate, and the summary with the time taken
    assert "full" in result.stdout and result.stdout.count("\n") == 1 + 6 * 4 + 1
    assert re.search(r"24 candidates, 10 starts each \(on all rows\) in [0-9.]+ s",
                     result.stdout)
    best = sm.load(tmp_path / "best.npz")
    assert (best.n_components, best.covariance_type) == (3, "full")
    assert (tmp_path / "bic.png").read_bytes()[:8] == PNG
    # the saved model named in a few words, not its start's arrays
    assert "best: GaussianMixture(n_components=3, covariance_type='full'); wrote" in \
        result.output and "array(" not in result.output


def test_select_reversed_range_is_the_same_grid_and_edges_warn(tmp_path, data):
    path, _ = data
    results = [ok("select", path, "--columns", "a,b", "-k", ks, "--covariance-type", "full",
                  "--seed", 0, "-o", tmp_path / f"{i}.npz") for i, ks in enumerate(["8..6",
                                                                                     "6..8"])]
    grids = [[line.split()[0] for line in r.stdout.splitlines()[1:-1]] for r in results]
    assert grids[0] == grids[1] == ["6", "7", "8"]
    # 3 components is the answer: 6..8 has its best on the lower edge, said in one line
    assert "Warning: the best k (6 full) is the smallest tried" in results[0].stderr
    # and both pick the same model
    np.testing.assert_allclose(sm.load(tmp_path / "0.npz").means_,
                               sm.load(tmp_path / "1.npz").means_, rtol=1e-12)


def test_select_leaves_out_overparameterized_candidates_unless_allowed(tmp_path, data):
    _, X = data
    few = tmp_path / "few.parquet"
    pq.write_table(pa.table({"a": X[:12, 0], "b": X[:12, 1]}), few)
    # full k: 6 k - 1 free parameters for 2 features; 3 > 12 / 6 is left out
    result = ok("select", few, "-k", "1..3", "--covariance-type", "full", "--seed", 0,
                "-o", tmp_path / "f.npz")
    assert "left out 1 candidate(s) with more free parameters than the 12 rows: 3 full (17)" \
        in result.stderr
    forced = ok("select", few, "-k", "1..3", "--covariance-type", "full", "--seed", 0,
                "--allow-overparameterized", "-o", tmp_path / "g.npz")
    assert len(forced.stdout.splitlines()) == 1 + 3 + 1


def test_select_kmeans_silhouette_on_five_blobs(tmp_path):
    rng = np.random.default_rng(0)
    centers = [(0.2, 2.3), (-1.5, 2.3), (-2.8, 1.8), (-2.8, 2.8), (-2.8, 1.3)]
    stds = [0.4, 0.3, 0.1, 0.1, 0.1]
    X = np.concatenate([rng.normal(c, s, (400, 2)) for c, s in zip(centers, stds, strict=True)])
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1]}), tmp_path / "f.parquet")
    ok("select", tmp_path / "f.parquet", "--model", "kmeans", "-k", "2..8", "--seed", 0,
       "-o", tmp_path / "k.npz", "--plot", tmp_path / "elbow.png")
    assert sm.load(tmp_path / "k.npz").n_clusters in (4, 5)
    assert (tmp_path / "elbow.png").read_bytes()[:8] == PNG


def test_sample_and_plot(tmp_path, data):
    path, _ = data
    ok("fit", path, "-k", 3, "--columns", "a,b", "--seed", 0, "--contamination", 0.02,
       "-o", tmp_path / "m.npz")
    ok("sample", tmp_path / "m.npz", "-n", 500, "-o", tmp_path / "s.parquet")
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.num_rows == 500 and table.column_names == ["a", "b", "component"]
    ok("plot", tmp_path / "m.npz", path, "-o", tmp_path / "fig.png", "--sample", 800)
    ok("plot", tmp_path / "m.npz", path, "-o", tmp_path / "ab.png", "--features", "b,a")
    assert (tmp_path / "fig.png").read_bytes()[:8] == PNG
    assert (tmp_path / "fig.png").stat().st_size > 20_000  # an actual picture


def test_progress_is_quiet_in_pipes_unless_verbose(tmp_path, data):
    path, _ = data
    quiet = ok("fit", path, "-k", 2, "--columns", "a,b", "-o", tmp_path / "a.npz")
    loud = ok("fit", path, "-k", 2, "--columns", "a,b", "-o", tmp_path / "b.npz", "-v")
    assert "Iteration 1" not in quiet.stderr and "pass 1" not in quiet.stderr
    assert "fitted GaussianMixture" in quiet.stderr  # the summary stays
    # scikit-learn's verbose lines, on stderr: the command line keeps stdout for data
    assert "Initialization 0" in loud.stderr and "  Iteration 1\n" in loud.stderr
    assert loud.stdout == ""
    silent = ok("fit", path, "-k", 2, "--columns", "a,b", "-o", tmp_path / "c.npz", "-v", "-q")
    assert silent.stderr == ""


def test_damaged_input_and_bad_options_exit_2_with_one_line(tmp_path, data):
    path, _ = data
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:-30])
    cases = [("fit", broken, "-o", tmp_path / "m.npz"),
             ("fit", path, "--model", "spectral", "-o", tmp_path / "m.npz"),
             ("plot", tmp_path / "absent.npz", path, "-o", tmp_path / "x.png"),
             ("select", path, "-k", "x..y", "-o", tmp_path / "m.npz")]
    for args in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert "broken.parquet: is not a readable Parquet file" in run(*cases[0]).output


def test_fit_with_a_weight_column_and_float32_columns(tmp_path):
    from sklearn.cluster import KMeans as SkKMeans

    rng = np.random.default_rng(3)
    X = rng.permutation(np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(6, 1, (300, 2))]))
    weights = rng.integers(0, 4, len(X))
    table = pa.table({"a": X[:, 0].astype(np.float32), "b": X[:, 1].astype(np.float32),
                      "count": weights})
    pq.write_table(table, tmp_path / "w.parquet", row_group_size=111)
    ok("fit", tmp_path / "w.parquet", "--model", "kmeans", "-k", 2, "--weight-column", "count",
       "--seed", 0, "-o", tmp_path / "k.npz")
    model = sm.load(tmp_path / "k.npz")
    assert list(model.feature_names_in_) == ["a", "b"]  # the weight column is not a feature
    assert model.cluster_centers_.dtype == np.float32  # dtype follows the columns
    data = np.column_stack([table["a"].to_numpy(), table["b"].to_numpy()])
    theirs = SkKMeans(2, n_init=10, random_state=0).fit(data, sample_weight=weights)
    np.testing.assert_allclose(np.sort(model.cluster_centers_[:, 0]),
                               np.sort(theirs.cluster_centers_[:, 0]), atol=1e-4)
    bad = run("fit", tmp_path / "w.parquet", "--weight-column", "nope", "-o", tmp_path / "x.npz")
    assert bad.exit_code == 2 and "column 'nope': no such column" in bad.output


def test_fit_leaves_the_id_and_excluded_columns_out_and_says_which_it_used(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 2))
    table = pa.table({"id": np.arange(400), "label": rng.integers(0, 3, 400), "a": X[:, 0],
                      "b": X[:, 1], "name": ["r"] * 400})
    pq.write_table(table, tmp_path / "d.parquet")
    done = ok("fit", tmp_path / "d.parquet", "-k", 2, "--exclude-columns", "label,name",
              "-o", tmp_path / "m.npz")
    assert list(sm.load(tmp_path / "m.npz").feature_names_in_) == ["a", "b"]
    assert "2 features (a, b)" in done.output
    # --id-field names another id column; --columns chooses outright
    ok("fit", tmp_path / "d.parquet", "-k", 2, "--id-field", "label", "--exclude-columns",
       "id,name", "-o", tmp_path / "n.npz")
    assert list(sm.load(tmp_path / "n.npz").feature_names_in_) == ["a", "b"]
    ok("fit", tmp_path / "d.parquet", "-k", 2, "--columns", "id,a", "-o", tmp_path / "c.npz")
    assert list(sm.load(tmp_path / "c.npz").feature_names_in_) == ["id", "a"]
    typo = run("fit", tmp_path / "d.parquet", "--exclude-columns", "lable", "-o", tmp_path / "x")
    assert typo.exit_code == 2 and "column 'lable': no such column to exclude" in typo.output
    source = sm.read_parquet(tmp_path / "d.parquet", exclude_columns=["id", "label", "name"])
    assert source.feature_names == ("a", "b")


def test_output_paths_are_checked_before_any_work_in_one_line(tmp_path, data, monkeypatch):
    path, _ = data
    from streammix.estimators import GaussianMixture

    def no_fit(*args, **kwargs):
        raise AssertionError("fit started before the output path was checked")

    monkeypatch.setattr(GaussianMixture, "fit", no_fit)
    (tmp_path / "file").write_text("")
    cases = [
        (("fit", path, "-o", tmp_path / "absent" / "m.npz"), "absent does not exist"),
        (("fit", path, "-o", tmp_path), "is a folder; give a file name"),
        (("fit", path, "--checkpoint", tmp_path / "file", "-o", tmp_path / "m.npz"),
         "is a file; give a folder"),
        (("select", path, "-k", "1..2", "-o", tmp_path / "b.npz", "--plot",
          tmp_path / "no" / "s.png"), "s.png: the folder"),
        (("fit", path, "-k", 0, "-o", tmp_path / "m.npz"), "0 is not in the range x>=1"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output  # one line


def test_messages_name_the_option_and_what_it_expects(tmp_path, data):
    path, _ = data
    ok("fit", path, "-k", 2, "--columns", "a,b", "-o", tmp_path / "m.npz")
    cases = [
        (("select", path, "-k", "abc", "-o", tmp_path / "b.npz"),
         ["'-k' / '--n-components'", "1..10 (both ends included)", "'abc'"]),
        (("plot", tmp_path / "m.npz", path, "--features", "a,nope", "-o", tmp_path / "p.png"),
         ["no feature 'nope'", "give two of a, b"]),
        (("score", tmp_path / "m.npz", path, "-o", tmp_path / "s.parquet"),
         ["--contamination", "--threshold", "streammix calibrate"]),
        (("info", path), ["not a streammix model file"]),
    ]
    for args, parts in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        for part in parts:
            assert part in result.output, (args, result.output)
        assert "fit(X)" not in result.output and "pickle" not in result.output
    ok("plot", tmp_path / "m.npz", path, "--features", "b,a", "-o", tmp_path / "p.png")


def test_output_files_get_the_usual_permissions(tmp_path, data):
    import os

    path, _ = data
    previous = os.umask(0o022)
    try:
        ok("fit", path, "-k", 2, "--columns", "a,b", "-o", tmp_path / "m.npz")
        ok("predict", tmp_path / "m.npz", path, "-o", tmp_path / "p.parquet")
    finally:
        os.umask(previous)
    for name in ("m.npz", "p.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # not 0600


def test_help_shows_every_default_and_explains_every_select_option():
    import click

    for name, command in main.commands.items():
        text = " ".join(ok(name, "--help").output.split())
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            default = param.default
            if isinstance(default, int | float | str) and not isinstance(default, bool) \
                    and not param.count:
                assert f"default: {default}" in text, (name, param.name)
            if name == "select":
                assert param.help, param.name
    assert "info" in main.commands and not any(
        p.name in ("verbose", "quiet") for p in main.commands["info"].params)
    # one meaning per option name: --batch-size is fit's mini-batch rows only
    assert not any(p.name == "batch_size" for p in main.commands["score"].params)


def test_fit_summary_lists_every_feature_and_warns_of_a_forgotten_label(tmp_path):
    """20 measured features and a forgotten ``label`` column (the cluster's number), and a
    ``visits`` count of 4 values: the summary names all 22 columns, the two are warned
    about (by name; by few integer values), no measured feature is."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, 600)
    columns = {f"x{j}": rng.normal(label * 5.0, 1.0) for j in range(20)}
    columns.update(label=label, visits=rng.integers(1, 5, 600).astype(float))
    pq.write_table(pa.table(columns), tmp_path / "d.parquet")
    result = ok("fit", tmp_path / "d.parquet", "-k", 3, "--seed", 0, "-o", tmp_path / "m.npz")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 2, result.stderr
    assert "'label' looks like a label (its name)" in warnings[0]
    assert "--exclude-columns label" in warnings[0]
    assert "'visits' looks like a label (4 distinct integer values)" in warnings[1]
    assert "22 features (x0..x19, label, visits)" in result.stderr
    kept = ok("fit", tmp_path / "d.parquet", "-k", 3, "--seed", 0, "--exclude-columns",
              "label,visits", "-o", tmp_path / "m2.npz")
    assert "Warning" not in kept.stderr
    assert "20 features (x0..x19)" in kept.stderr


@pytest.mark.parametrize("names, shown", [
    (["a", "b", "c"], "a, b, c"),
    (["x0", "x1"], "x0, x1"),  # a run of two stays as it is
    (["x0", "x1", "x2", "y", "f9", "f10", "f11"], "x0..x2, y, f9..f11"),
    (["x1", "x3", "x4", "x5"], "x1, x3..x5"),
    (["x01", "x02", "x03"], "x01, x02, x03"),  # zero-padded: not a plain count
])
def test_compact_feature_names(names, shown):
    from streammix.cli.fitting import compact_names

    assert compact_names(names) == shown


@pytest.mark.parametrize("model, stages", [
    ("gmm", ["initialisation: k-means||", "initialisation: k-means iterations",
             "initialisation: responsibilities from k-means"]),
    ("bayesian-gmm", ["priors: the data's mean and covariance", "initialisation: k-means||",
                      "initialisation: k-means iterations",
                      "initialisation: responsibilities from k-means"]),
])
def test_fit_verbose_names_the_passes_before_the_first_iteration(tmp_path, data, model,
                                                                 stages):
    """``fit -v`` on Parquet (k-means|| seeding): each pass before "Iteration 1" is named
    by its stage, in order; a stage that says how many passes it makes makes that many."""
    import re

    path, _ = data
    loud = ok("fit", path, "--model", model, "-k", 3, "--columns", "a,b", "--seed", 0,
              "-o", tmp_path / "m.npz", "-v")
    before = loud.stderr.split("  Iteration 1\n")[0]
    # tqdm redraws each bar; its first drawing (0 rows) names the pass once
    named = [m.groups() for line in re.split(r"[\r\n]", before)
             if (m := re.match(r"^(.*?)\s*\bpass (\d+)(?:/(\d+))?: +0%", line))]
    assert named and all(stage for stage, _, _ in named), named  # no bare "pass N"
    order = list(dict.fromkeys(stage for stage, _, _ in named))
    assert order == [*stages, "iterations"]  # the first iteration's own pass comes last
    for stage in stages:
        numbers = [(int(i), total) for name, i, total in named if name == stage]
        assert [i for i, _ in numbers] == list(range(1, len(numbers) + 1))
        if numbers[0][1]:  # a declared count is the count made
            assert {int(total) for _, total in numbers} == {len(numbers)}


def test_options_for_another_model_or_a_resumed_split_are_refused(tmp_path, data):
    """select's GMM options with --model kmeans (and the silhouette's with gmm), and a
    held-out split that a resumed fit could not draw again (no --seed): one line each."""
    path, _ = data
    cases = [(("select", path, "--model", "kmeans", "-k", "2..3", "--screen-size", 100),
              "--screen-size applies to --model gmm"),
             (("select", path, "--model", "kmeans", "-k", "2..3", "--criterion", "aic"),
              "--criterion applies to --model gmm"),
             (("select", path, "-k", "2..3", "--sample-size", 100),
              "--sample-size applies to --model kmeans"),
             (("fit", path, "-k", 2, "--calibration-fraction", 0.2, "--checkpoint",
               tmp_path / "ck"), "needs --seed")]
    for args, message in cases:
        result = run(*args, "-o", tmp_path / "m.npz")
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output

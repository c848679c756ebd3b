"""tailscope zoo: real small models analysed on a real Dask LocalCluster (2 workers) into SQLite and
PostgreSQL stores, checked against single-process ``analyze``; resume, crashes, bad input,
correlations against pandas' own rank correlations."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from oracles import minilm_path, mtcnn_path

from tailscope import analyze
from tailscope.datasets import fetch_wheel_file
from tailscope.engine.columns import COLUMNS

distributed = pytest.importorskip("distributed")
pytest.importorskip("sqlalchemy")

from tailscope.zoo import (  # noqa: E402
    ManifestError,
    SchedulerError,
    StoreError,
    correlate,
    open_store,
    options_key,
    read_manifest,
    run_zoo,
    write_zoo_report,
)

TEXT = tuple(c.name for c in COLUMNS if c.dtype == "text")  # as declared


# --- fixtures: one cluster and one set of real models for the whole module -------------------
@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Real trained weights: MTCNN pnet/rnet/onet (.pt), g2p-en (.npz), and three one-block slices
    of all-MiniLM-L6-v2 (safetensors with that block's real tensors)."""
    from safetensors.numpy import save_file

    from tailscope.sources import open_source

    folder = tmp_path_factory.mktemp("zoo-models")
    paths = {net: str(mtcnn_path(net)) for net in ("pnet", "rnet", "onet")}
    paths["g2p"] = str(fetch_wheel_file("g2p-en==2.1.0", "g2p_en/checkpoint20.npz"))
    refs = list(open_source(minilm_path()))
    for block in range(3):
        tensors = {r.name: np.ascontiguousarray(r.load()) for r in refs
                   if r.name.startswith(f"encoder.layer.{block}.") and len(r.shape) == 2}
        path = folder / f"minilm-block{block}.safetensors"
        save_file(tensors, str(path))
        paths[f"minilm{block}"] = str(path)
    return paths


@pytest.fixture(scope="module")
def expected(models):
    """Single-process analyze() of every model: what the store must hold. With one BLAS thread, as
    in the workers: the smallest eigenvalues of a Gram matrix differ in their last bits between
    thread counts (sv_min ~1e-9 relative), the fit's eigenvalues do not."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return {name: analyze(path) for name, path in models.items()}


GROUPS = {"pnet": "mtcnn", "rnet": "mtcnn", "onet": "mtcnn", "g2p": "rnn", "minilm0": "bert",
          "minilm1": "bert", "minilm2": "bert"}


def write_manifest(path, models, extra_rows=(), copies=1):
    rows = ["source,name,group,accuracy"]
    for c in range(copies):
        for i, (name, src) in enumerate(models.items()):
            suffix = f"-{c}" if copies > 1 else ""
            rows.append(f"{src},{name}{suffix},{GROUPS[name]},{0.5 + 0.05 * i}")
    rows.extend(extra_rows)
    path.write_text("\n".join(rows) + "\n")
    return path


def assert_same_details(stored: pd.DataFrame, want: pd.DataFrame, rtol=1e-10):
    assert list(stored.columns) == list(want.columns)
    assert len(stored) == len(want)
    for c in want.columns:
        if c in TEXT:
            assert stored[c].fillna("").tolist() == want[c].fillna("").tolist(), c
        else:
            np.testing.assert_allclose(stored[c].astype(float), want[c].astype(float),
                                       rtol=rtol, equal_nan=True, err_msg=c)


def assert_store_equals(run, expected, rtol=1e-10):
    for name, a in expected.items():
        assert_same_details(run.details(name), a.details, rtol)
        row = run.models.set_index("name").loc[name]
        for k, v in a.summary().items():
            np.testing.assert_allclose(float(row[k]), v, rtol=rtol, equal_nan=True, err_msg=k)


# --- the zoo on a shared LocalCluster --------------------------------------------------------
def test_store_equals_single_process_analyze_and_resumes(client, models, expected, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    manifest = write_manifest(tmp_path / "zoo.csv", models, [
        f"{tmp_path / 'missing.pt'},ghost,rnn,0.1",
        f"{corrupt},corrupt,,0.2",
        ",no-source,,0.3"])
    store = tmp_path / "results.db"
    run = run_zoo(manifest, store=store, scheduler=client, progress=False)
    assert run.computed == 10 and run.resumed == 0
    assert run.models["name"].tolist() == [*models, "ghost", "corrupt", "no-source"]
    assert_store_equals(run, expected)
    failed = run.models.set_index("name")
    assert (failed.loc[list(models), "status"] == "success").all()
    assert failed.loc["ghost", "status"] == "failed"
    assert "no such file" in failed.loc["ghost", "reason"]
    assert "corrupt safetensors header" in failed.loc["corrupt", "reason"]
    assert failed.loc["no-source", "reason"] == "no source given in the manifest"
    assert np.isnan(failed.loc["ghost", "alpha"])  # never a made-up number
    assert failed.loc["g2p", "group"] == "rnn" and failed.loc["onet", "accuracy"] == 0.6

    # the tables hold exactly one row per model, and each model's layer rows
    con = sqlite3.connect(store)
    assert con.execute("SELECT count(*), count(DISTINCT name) FROM models").fetchone() == (10, 10)
    n_layers = sum(len(a.details) for a in expected.values())
    assert con.execute("SELECT count(*) FROM layers").fetchone()[0] == n_layers
    version, opts = con.execute("SELECT tailscope_version, options FROM runs").fetchone()
    assert version == "0.1.0" and '"min_evals": 10' in opts
    con.close()

    # resume: finished models are skipped, failed ones tried again; --force recomputes all
    again = run_zoo(manifest, store=store, scheduler=client, progress=False)
    assert (again.computed, again.resumed) == (3, 7) and again.key == run.key
    assert_store_equals(again, expected)
    forced = run_zoo(manifest, store=store, scheduler=client, progress=False, force=True)
    assert (forced.computed, forced.resumed) == (10, 0)
    assert options_key(dict(forced.store.keys()["options"].map(json.loads).iloc[0],
                            min_evals=50)) != run.key  # other options: another key
    assert options_key(dict(forced.store.keys()["options"].map(json.loads).iloc[0],
                            jobs=4, device="torch:cpu")) == run.key
    counts = open_store(store).counts(run.key)
    assert len(counts) == 10 and all(n == rows or n is None for n, rows in counts.values())


def test_torch_batched_path_equals_numpy_in_the_workers(client, models, expected, tmp_path):
    """The GPU code path (same-shape layers batched into one torch eigvalsh call), run on
    'torch:cpu' in the Dask workers, equals the numpy path to 1e-6 relative in float64."""
    manifest = write_manifest(tmp_path / "zoo.csv", models)
    run = run_zoo(manifest, store=tmp_path / "t.db", scheduler=client, progress=False,
                  device="torch:cpu")
    assert_store_equals(run, expected, rtol=1e-6)


def test_analyze_scheduler_spreads_layers_and_equals_analyze(client, models, expected):
    for name in ("onet", "minilm1"):
        spread = analyze(models[name], scheduler=client)
        pd.testing.assert_frame_equal(spread.details, expected[name].details, rtol=1e-10)
        assert spread.summary() == pytest.approx(expected[name].summary(), rel=1e-10,
                                                 nan_ok=True)
    # a model in memory travels to the workers as its planned layers: the local numbers
    w = np.random.default_rng(3).standard_normal((60, 40))
    pd.testing.assert_frame_equal(analyze(w, scheduler=client).details, analyze(w).details,
                                  check_exact=True)


@pytest.mark.slow  # a LocalCluster worker killed mid-run
def test_killed_worker_loses_nothing(client, models, expected, tmp_path):
    """SIGKILL one worker mid-run: its task is redone elsewhere, every model appears once."""
    manifest = write_manifest(tmp_path / "zoo.csv", models, copies=2)
    store = tmp_path / "kill.db"
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(run=run_zoo(
        manifest, store=store, scheduler=client, progress=False)))
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _stored(store) < 1:
        time.sleep(0.02)
    pids = client.run(os.getpid)
    assert _stored(store) < 14, "the run ended before the kill: nothing was tested"
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    thread.join(300)
    run = out["run"]
    client.wait_for_workers(2, timeout=60)
    assert len(run.models) == 14 and (run.models["status"] == "success").all()
    for c in range(2):
        assert_store_equals(_renamed(run, c), expected)
    assert _stored(store) == 14


def _stored(path) -> int:
    if not os.path.exists(path):
        return 0
    con = sqlite3.connect(path, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM models").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0
    finally:
        con.close()


class _renamed:
    """A run's copy c of each model, under the model's plain name."""

    def __init__(self, run, c):
        self.run, self.c = run, c
        models = run.models[run.models["name"].str.endswith(f"-{c}")].copy()
        models["name"] = models["name"].str.rsplit("-", n=1).str[0]
        self.models = models

    def details(self, name):
        return self.run.details(f"{name}-{self.c}")


@pytest.mark.slow  # a second LocalCluster in a subprocess: ~30-70 s on 2 busy cores
def test_killed_driver_resumes_with_every_model_once(client, models, expected, tmp_path):
    """SIGKILL the driver (a subprocess with its own LocalCluster) mid-run: the store holds only
    whole models; a re-run finishes the rest and the results equal a clean run."""
    manifest = write_manifest(tmp_path / "zoo.csv", models, copies=2)
    store = tmp_path / "crash.db"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "tailscope", "zoo", str(manifest), "--store",
                             str(store), "--workers", "2", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and _stored(store) < 1 and proc.poll() is None:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"the driver ended before the kill: {proc.stderr.read().decode()[-500:]}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    before = _stored(store)
    assert 1 <= before < 14, f"the kill missed the run ({before} of 14 stored)"
    db = open_store(store)
    key = db.latest_key()
    counts = db.counts(key)
    assert all(n == rows for n, rows in counts.values())  # no partial model
    run = run_zoo(manifest, store=store, scheduler=client, progress=False)
    assert run.resumed == before and run.computed == 14 - before
    assert len(run.models) == 14 and run.models["name"].is_unique
    for c in range(2):
        assert_store_equals(_renamed(run, c), expected)


# --- PostgreSQL ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_url():
    url = os.environ.get("TAILSCOPE_TEST_PG_URL")
    if not url:
        message = ("TAILSCOPE_TEST_PG_URL is not set: run `export TAILSCOPE_TEST_PG_URL=$(.ci/"
                   "postgres.sh)` (.ci/run does)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)  # in CI the server is part of the set-up: never skip
        pytest.skip(message)
    return url


def test_postgres_store_equals_sqlite(client, models, expected, pg_url, tmp_path):
    import sqlalchemy as sa

    manifest = write_manifest(tmp_path / "zoo.csv", models, [f"{tmp_path / 'nope.pt'},ghost,,1"])
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # a fresh schema each time
        for table in ("layers", "models", "runs"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    engine.dispose()
    run = run_zoo(manifest, store=pg_url, scheduler=client, progress=False)
    assert run.store.engine.dialect.name == "postgresql"
    assert_store_equals(run, expected)
    assert run.models.set_index("name").loc["ghost", "status"] == "failed"
    again = run_zoo(manifest, store=pg_url, scheduler=client, progress=False)
    assert (again.computed, again.resumed) == (1, 7)
    assert len(again.models) == 8


def test_postgres_bad_credentials_fail_before_any_work(pg_url, tmp_path, models):
    bad = pg_url.replace("tailscope-test@", "wrong-password@")
    with pytest.raises(StoreError, match="password authentication failed"):
        open_store(bad)
    manifest = write_manifest(tmp_path / "zoo.csv", models)
    res = _cli("zoo", str(manifest), "--store", bad)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "password authentication failed" in res.stderr
    assert "://postgres:***@" in res.stderr  # the password is not printed


# --- bad input -------------------------------------------------------------------------------
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..", "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.slow  # connect timeouts and two fresh processes: ~15 s
def test_bad_manifest_store_or_scheduler_fails_before_any_work(tmp_path, models):
    no_source = tmp_path / "a.csv"
    no_source.write_text("path,accuracy\nx.pt,0.5\n")
    dup = tmp_path / "b.csv"
    dup.write_text(f"source,name\n{models['pnet']},m\n{models['rnet']},m\n")
    good = write_manifest(tmp_path / "good.csv", {"pnet": models["pnet"]})
    store = tmp_path / "s.db"
    cases = [
        ((no_source,), {}, ManifestError, "no 'source' column"),
        ((dup,), {}, ManifestError, "appears twice"),
        ((tmp_path / "none.csv",), {}, ManifestError, "no such manifest"),
        ((good,), {"store": tmp_path / "no" / "dir" / "r.db"}, StoreError, "does not exist"),
        ((good,), {"store": "nosuchdb://x"}, StoreError, "store"),
        ((good,), {"store": store, "scheduler": "tcp://127.0.0.1:9", "connect_timeout": 1},
         SchedulerError, "cannot reach the Dask scheduler"),
    ]
    for args, kwargs, error, text in cases:
        with pytest.raises(error, match=text) as info:
            run_zoo(*args, progress=False, **kwargs)
        assert "\n" not in str(info.value)
    assert _stored(store) == 0  # nothing was analysed
    # the command line: one line on stderr, exit code 2
    for args, text in [(("zoo", str(dup)), "appears twice"),
                       (("zoo", str(good), "--store", str(store), "--scheduler",
                         "tcp://127.0.0.1:9", "--connect-timeout", "1"),
                        "cannot reach the Dask scheduler")]:
        res = _cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("tailscope: error:") and res.stderr.count("\n") == 1, \
            res.stderr
        assert text in res.stderr, (text, res.stderr)
    with pytest.raises(SchedulerError, match="cannot reach"):  # analyze --scheduler's path
        analyze(models["pnet"], scheduler="tcp://127.0.0.1:9")


def test_manifest_formats(tmp_path, models):
    yml = tmp_path / "m.yaml"
    yml.write_text(f"models:\n  - source: {models['pnet']}\n    group: mtcnn\n    accuracy: 0.9\n"
                   f"  - source: sub/x.pt\n    name: rel\n    top5: 0.5\n")
    table = read_manifest(yml)
    assert table["name"].tolist() == [models["pnet"], "rel"]
    assert table["group"].tolist() == ["mtcnn", ""]
    assert np.isnan(table.loc[1, "accuracy"]) and table.loc[1, "top5"] == 0.5
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.pt").write_bytes(b"")
    assert read_manifest(yml)["path"].tolist()[1] == str(tmp_path / "sub" / "x.pt")
    bad = tmp_path / "bad.yaml"
    bad.write_text("just a string\n")
    with pytest.raises(ManifestError, match="list of models"):
        read_manifest(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("source,name\n")
    with pytest.raises(ManifestError, match="no model"):
        read_manifest(empty)


# --- correlations ----------------------------------------------------------------------------
def test_correlate_equals_pandas_and_least_squares(tmp_path):
    rng = np.random.default_rng(7)
    n = 40
    alpha = rng.uniform(2, 6, n)
    table = pd.DataFrame({
        "name": [f"m{i}" for i in range(n)], "status": ["success"] * n,
        "group": rng.choice(["a", "b", ""], n),
        "alpha": alpha, "alpha_weighted": rng.normal(size=n), "log_alpha_norm": rng.normal(size=n),
        "log_spectral_norm": rng.normal(size=n), "log_norm": np.round(rng.normal(size=n), 1),
        "stable_rank": rng.normal(size=n), "D": rng.normal(size=n),
        "accuracy": 1.0 - 0.1 * alpha + rng.normal(0, 0.05, n)})
    table.loc[3, "status"] = "failed"
    table.loc[5, "accuracy"] = np.nan
    result = correlate(table, "accuracy")
    assert set(result["group"]) == {"all", "a", "b"}
    for _, row in result.iterrows():
        part = table[(table["status"] == "success") & table["accuracy"].notna()]
        if row["group"] != "all":
            part = part[part["group"] == row["group"]]
        x, y = part[row["metric"]], part["accuracy"]
        assert row["n"] == len(part)
        assert row["spearman_rho"] == pytest.approx(x.corr(y, method="spearman"), abs=1e-12)
        assert row["kendall_tau"] == pytest.approx(x.corr(y, method="kendall"), abs=1e-12)
        slope, icept = np.polyfit(x, y, 1)
        resid = y - (slope * x + icept)
        r2 = 1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()
        assert row["r2"] == pytest.approx(r2, abs=1e-10)
    assert result.set_index(["metric", "group"]).loc[("alpha", "all"), "spearman_rho"] < -0.8
    tiny = correlate(table.iloc[:2], "accuracy", by_group=False)
    assert tiny["spearman_rho"].isna().all()  # under 3 models: no number
    with pytest.raises(ValueError, match="no quality column"):
        correlate(table, "perplexity")
    page = write_zoo_report(table, tmp_path / "zoo.html", quality=["accuracy"])
    text = page.read_text()
    assert text.count("<img") == 7 and "spearman_rho" in text


@pytest.mark.slow  # fresh processes on the LocalCluster's store
def test_cli_zoo_correlate_and_report(client, models, tmp_path):
    manifest = write_manifest(tmp_path / "zoo.csv", models)
    store = tmp_path / "cli.db"
    run_zoo(manifest, store=store, scheduler=client, progress=False)  # the CLI resumes all
    res = _cli("zoo", str(manifest), "--store", str(store), "--correlate", "accuracy",
               "--report", str(tmp_path / "zoo.html"))
    assert res.returncode == 0, res.stderr
    assert "7 of 7 models already in" in res.stderr
    assert "summary metrics vs accuracy" in res.stdout and "spearman_rho" in res.stdout
    assert "7 models: 7 analysed, 0 failed (0 computed now, 7 already in the store)" in res.stdout
    want = correlate(store, "accuracy")
    rho = want.set_index(["metric", "group"]).loc[("alpha", "all"), "spearman_rho"]
    assert f"{rho:.4g}" in res.stdout
    assert (tmp_path / "zoo.html").read_text().count("<img") == 7
    res = _cli("zoo", str(manifest), "--store", str(store), "--correlate", "perplexity")
    assert res.returncode == 2 and "no such quality column" in res.stderr


def test_diagnostics_columns_are_stored_and_read_back(client, models, tmp_path):
    """Options that add columns (MP fit with its text reason, detX, comparisons, unpooled slices)
    keep every column, in the analysis' order, through the store."""
    from threadpoolctl import threadpool_limits

    picked = {k: models[k] for k in ("onet", "minilm0")}
    options = dict(mp_fit=True, detX=True, compare=("lognormal",), pool=False)
    manifest = write_manifest(tmp_path / "zoo.csv", picked)
    run = run_zoo(manifest, store=tmp_path / "diag.db", scheduler=client, progress=False,
                  **options)
    for name, path in picked.items():
        with threadpool_limits(limits=1, user_api="blas"):
            a = analyze(path, **options)
        want = a.details
        # every summary mean, mp_softrank (kept in the models' extras) too
        row = run.models.set_index("name").loc[name]
        for k, v in a.summary().items():
            np.testing.assert_allclose(float(row[k]), v, rtol=1e-10, equal_nan=True, err_msg=k)
        assert "mp_softrank" in a.summary()
        stored = run.details(name)
        assert {"mp_reason", "detX_num", "R_lognormal", "slice_id"} <= set(stored.columns)
        text = (*TEXT, "mp_reason")
        assert list(stored.columns) == list(want.columns)
        for c in want.columns:
            if c in text:
                assert stored[c].fillna("").tolist() == want[c].fillna("").tolist(), c
            else:
                np.testing.assert_allclose(stored[c].astype(float), want[c].astype(float),
                                           rtol=1e-10, equal_nan=True, err_msg=c)


# --- the store evolves: older stores are migrated, never rewritten ----------------------------
# what an older tailscope created: fewer typed columns (no stable_rank, no models.extras, no
# entropy or sv_min), plus columns that today's tailscope no longer declares (old_*)
_OLD_RUNS = [("run_id", "{pk}"), ("key", "VARCHAR(64) NOT NULL"),
             ("tailscope_version", "VARCHAR(32) NOT NULL"), ("options", "TEXT NOT NULL"),
             ("manifest", "TEXT"), ("scheduler", "TEXT"), ("started", "{ts}"),
             ("finished", "{ts}"), ("models", "INTEGER"), ("done", "INTEGER"),
             ("failed", "INTEGER"), ("resumed", "INTEGER")]
_OLD_METRICS = ("alpha", "alpha_weighted", "log_alpha_norm", "D", "log_norm", "log_spectral_norm")
_COUNTS = ("layers", "success", "failed", "skipped", "over_trained", "under_trained")
_OLD_MODELS = [("model_id", "{pk}"), ("key", "VARCHAR(64) NOT NULL"), ("run_id", "INTEGER"),
               ("name", "TEXT NOT NULL"), ("source", "TEXT"), ("group", "TEXT"),
               ("status", "VARCHAR(16) NOT NULL"), ("reason", "TEXT"), ("read", "TEXT"),
               *[(m, "FLOAT") for m in _OLD_METRICS], *[(c, "INTEGER") for c in _COUNTS],
               ("quality", "TEXT"), ("seconds", "FLOAT"), ("worker", "TEXT"),
               ("finished", "{ts}"), ("old_score", "FLOAT")]
_OLD_LAYER_DATA = ("layer_id", "name", "module", "layer_type", "N", "M", "Q", "rf", "num_evals",
                   "alpha", "alpha_weighted", "log_alpha_norm", "D", "xmin", "xmax", "sigma",
                   "num_pl_spikes", "lambda_max", "spectral_norm", "norm", "log_norm",
                   "log_spectral_norm", "stable_rank", "matrix_rank", "rank_loss",
                   "weak_rank_loss", "sv_max", "status", "warning", "reason", "dtype")
_OLD_LAYERS = [("row_id", "{pk}"), ("model_id", "INTEGER NOT NULL REFERENCES models (model_id)"),
               ("position", "INTEGER NOT NULL"),
               *[({"xmin": "fit_xmin", "xmax": "fit_xmax"}.get(c, c),
                  "INTEGER" if c == "layer_id" else "TEXT" if c in TEXT else "FLOAT")
                 for c in _OLD_LAYER_DATA],
               ("extras", "TEXT"), ("old_metric", "FLOAT"), ("old_note", "TEXT")]


def _heavy_tailed_model(path, seed):
    """A safetensors file of 3 dense layers with Student-t (heavy-tailed) float32 weights."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file({f"block{i}.weight": rng.standard_t(3, size=shape).astype(np.float32)
               for i, shape in enumerate([(120, 80), (100, 60), (90, 70)])}, str(path))
    return str(path)


def _result(a):
    return {"status": "success", "reason": "", "summary": a.summary(), "details": a.details,
            "read": a.source, "seconds": 0.5, "worker": "test:1"}


def _write_old_store(execute, pk, ts, old):
    """Create the tables as an older tailscope did and store ``old`` (an Analysis) in them as it
    would have: one run, one model, its layer rows. ``execute(sql, params)`` runs raw SQL with
    '?' placeholders."""
    def create(name, cols):
        body = ", ".join(f'"{c}" {t.format(pk=pk, ts=ts)}' for c, t in cols)
        execute(f'CREATE TABLE {name} ({body})', ())

    def insert(name, row):
        names = ", ".join(f'"{c}"' for c in row)
        execute(f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()))

    create("runs", _OLD_RUNS)
    create("models", _OLD_MODELS)
    execute('CREATE UNIQUE INDEX uq_old_models ON models ("key", "name")', ())
    create("layers", _OLD_LAYERS)
    insert("runs", {"key": "k", "tailscope_version": "0.0.9", "options": "{}",
                    "models": 1, "done": 1, "failed": 0, "resumed": 0})
    summary = old.summary()
    insert("models", {"key": "k", "run_id": 1, "name": "old", "source": "old.st",
                      "group": "g", "status": "success", "reason": "", "read": "old.st",
                      **{m: summary[m] for m in _OLD_METRICS}, **{c: summary[c] for c in _COUNTS},
                      "quality": '{"accuracy": 0.25}', "seconds": 1.5, "worker": "w",
                      "old_score": 42.0})
    for pos, rec in enumerate(old.details.to_dict("records")):
        row = {"model_id": 1, "position": pos}  # ids as the database assigns them
        for c in _OLD_LAYER_DATA:
            v = rec[c]
            row[{"xmin": "fit_xmin", "xmax": "fit_xmax"}.get(c, c)] = (
                str(v) if c in TEXT else int(v) if c == "layer_id" else
                None if pd.isna(v) else float(v))
        row.update(old_metric=10.0 + pos, old_note=f"note {pos}")
        insert("layers", row)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request, tmp_path):
    """An older tailscope's store (see _write_old_store) on SQLite, or on PostgreSQL in a schema
    of its own (dropped afterwards): (url, the old model's Analysis, columns(table) -> names)."""
    old = analyze(_heavy_tailed_model(tmp_path / "old.safetensors", seed=1))
    if request.param == "sqlite":
        path = tmp_path / "old.db"
        con = sqlite3.connect(path)
        _write_old_store(con.execute, "INTEGER NOT NULL PRIMARY KEY", "DATETIME", old)
        con.commit()
        con.close()

        def columns(table):
            with sqlite3.connect(path) as c:
                return [r[1] for r in c.execute(f"PRAGMA table_info({table})")]

        yield str(path), old, columns
        return
    import sqlalchemy as sa

    url = request.getfixturevalue("pg_url")
    schema = f"ts_migrate_{os.getpid()}_{time.time_ns() % 10**9}"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(f"SET search_path TO {schema}")
        _write_old_store(lambda sql, params: cur.execute(sql.replace("?", "%s"), params),
                         "SERIAL PRIMARY KEY", "TIMESTAMP WITHOUT TIME ZONE", old)
        raw.commit()

        def columns(table):
            cur.execute("SELECT column_name FROM information_schema.columns WHERE "
                        "table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                        (schema, table))
            names = [r[0] for r in cur.fetchall()]
            raw.commit()
            return names

        yield f"{url}?options=-csearch_path%3D{schema}", old, columns
    finally:
        raw.rollback()
        cur = raw.cursor()
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        raw.commit()
        raw.close()
        engine.dispose()


def test_an_older_store_gains_the_new_columns_and_keeps_its_rows(old_store, tmp_path):
    url, old, columns = old_store
    before = {t: columns(t) for t in ("runs", "models", "layers")}
    assert "entropy" not in before["layers"] and "extras" not in before["models"]
    db = open_store(url)
    # every column declared stored since this store's version: the newer ones of every table
    assert sorted(db.added) == ["layers.entropy", "layers.expert", "layers.quant", "layers.snr",
                                "layers.sv_min", "layers.weight_var", "models.extras",
                                "models.skipped_layers", "models.stable_rank"]
    after = {t: columns(t) for t in ("runs", "models", "layers")}
    for t, names in before.items():  # nothing dropped, renamed or moved: only added at the end
        assert after[t][:len(names)] == names
    new = analyze(_heavy_tailed_model(tmp_path / "new.safetensors", seed=2))
    db.write_model("k", db.start_run("k", "0.1.0", {}, "m.csv", "local", 1),
                   {"name": "new", "source": "new.st", "group": "g",
                    "quality": {"accuracy": 0.75}}, _result(new))

    # the old model: every value still there, the columns it never had NaN
    want = old.details.copy()
    want["quant"] = np.nan
    want["entropy"] = np.nan
    want["sv_min"] = np.nan
    want["expert"] = np.nan
    got = db.details("old", "k")
    assert_same_details(got[list(want.columns)], want)
    # the new model: every column, equal to analyze
    assert_same_details(db.details("new", "k"), new.details)
    table = db.models_table("k").set_index("name")
    assert list(table.index) == ["old", "new"]
    for name, a in (("old", old), ("new", new)):
        for k, v in a.summary().items():
            want_v = np.nan if (name, k) == ("old", "stable_rank") else v
            np.testing.assert_allclose(float(table.loc[name, k]), want_v, rtol=1e-10,
                                       equal_nan=True, err_msg=f"{name} {k}")
    assert table.loc["old", "accuracy"] == 0.25 and table.loc["new", "accuracy"] == 0.75
    assert table.loc["old", "seconds"] == 1.5 and table.loc["old", "group"] == "g"
    assert db.counts("k") == {"old": (3, 3), "new": (3, 3)}
    # opening it again adds nothing
    again = open_store(url)
    assert again.added == []
    assert_same_details(again.details("new", "k"), new.details)
    db.close()
    again.close()


def test_columns_no_longer_declared_are_kept_and_read_back(old_store, tmp_path):
    url, old, columns = old_store
    db = open_store(url)
    new = analyze(_heavy_tailed_model(tmp_path / "new.safetensors", seed=3))
    db.write_model("k", 1, {"name": "new", "source": "new.st"}, _result(new))
    assert "old_metric" in columns("layers") and "old_note" in columns("layers")
    assert "old_score" in columns("models")
    got = db.details("old", "k")
    assert got["old_metric"].tolist() == [10.0, 11.0, 12.0]
    assert got["old_note"].tolist() == ["note 0", "note 1", "note 2"]
    assert list(got.columns)[-2:] == ["old_metric", "old_note"]
    # a model written today has no value there: its details are analyze's, nothing more
    assert_same_details(db.details("new", "k"), new.details)
    table = db.models_table("k").set_index("name")
    assert table.loc["old", "old_score"] == 42.0 and np.isnan(table.loc["new", "old_score"])
    db.close()


def test_typed_columns_come_from_the_declared_columns(tmp_path):
    from tailscope.engine.columns import BY_NAME, STORED_COLUMNS, SUMMARY_METRICS

    path = tmp_path / "fresh.db"
    db = open_store(path)
    con = sqlite3.connect(path)
    layer_types = {r[1]: r[2] for r in con.execute("PRAGMA table_info(layers)")}
    kinds = {"text": "TEXT", "int": "INTEGER", "float": "FLOAT"}
    for c in STORED_COLUMNS:
        assert layer_types[{"xmin": "fit_xmin", "xmax": "fit_xmax"}.get(c, c)] == \
            kinds[BY_NAME[c].dtype], c
    model_types = {r[1]: r[2] for r in con.execute("PRAGMA table_info(models)")}
    assert all(model_types[m] == "FLOAT" for m in SUMMARY_METRICS)
    assert all(model_types[c] == "INTEGER" for c in _COUNTS)
    assert model_types["extras"] == "TEXT"
    # an 'int' value arriving as an integral float is stored as an integer, NaN as NULL
    a = analyze(_heavy_tailed_model(tmp_path / "m.safetensors", seed=4))
    details = a.details.astype({"N": float, "num_pl_spikes": float})
    details.loc[1, "num_pl_spikes"] = np.nan
    db.write_model("k", 1, {"name": "m", "source": "m"}, dict(_result(a), details=details))
    rows = con.execute('SELECT typeof("N"), "N", typeof(num_pl_spikes), typeof(alpha) FROM layers '
                       "ORDER BY position").fetchall()
    assert [r[0] for r in rows] == ["integer"] * 3
    assert [r[1] for r in rows] == a.details["N"].tolist()
    assert [r[2] for r in rows] == ["integer", "null", "integer"]
    assert {r[3] for r in rows} == {"real"}
    con.close()
    db.close()


def test_summary_means_without_a_column_are_kept(tmp_path):
    """mp_fit=True: mp_softrank's mean goes into models.extras and comes back as a column of
    models_table, next to the other summary means, and correlate can use it."""
    from tailscope.engine.columns import SUMMARY_METRICS
    from tailscope.zoo import analyze_model

    db = open_store(tmp_path / "mp.db")
    key = "mp"
    run_id = db.start_run(key, "0.1.0", {"mp_fit": True}, "m.csv", "local", 4)
    want = {}
    for i in range(4):
        path = _heavy_tailed_model(tmp_path / f"m{i}.safetensors", seed=10 + i)
        result = analyze_model(path, {"mp_fit": True})
        want[f"m{i}"] = result
        db.write_model(key, run_id, {"name": f"m{i}", "source": path, "group": "",
                                     "quality": {"accuracy": 0.1 * i}}, result)
    db.write_model(key, run_id, {"name": "broken", "source": "x"},
                   {"status": "failed", "reason": "no such file"})
    table = db.models_table(key)
    cols = list(table.columns)
    assert cols.index("mp_softrank") == cols.index(SUMMARY_METRICS[-1]) + 1
    rows = table.set_index("name")
    for name, result in want.items():
        assert 0 < result["summary"]["mp_softrank"] < 1
        for k, v in result["summary"].items():
            np.testing.assert_allclose(float(rows.loc[name, k]), v, rtol=1e-12, err_msg=k)
        stored = db.details(name, key)
        assert list(stored.columns) == list(result["details"].columns)
        for c in stored.columns:
            if c in (*TEXT, "mp_reason"):
                assert stored[c].tolist() == result["details"][c].fillna("").tolist(), c
            else:
                np.testing.assert_allclose(stored[c].astype(float),
                                           result["details"][c].astype(float), rtol=1e-12,
                                           equal_nan=True, err_msg=c)
    assert np.isnan(rows.loc["broken", "mp_softrank"])
    corr = correlate(table, "accuracy", metrics=("mp_softrank",), by_group=False)
    x = table[table["status"] == "success"]
    assert corr["n"].tolist() == [4]
    assert corr["spearman_rho"].iloc[0] == pytest.approx(
        x["mp_softrank"].corr(x["accuracy"], method="spearman"), abs=1e-12)
    db.close()

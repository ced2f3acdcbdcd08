"""Nightly training on the real Tmall marts (smoke sizes): split, features through Feast, the ordinal models, the
retrieval baselines, model directories, the champion gate on a rerun, and resuming a killed run."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nightrec.warehouse import Warehouse, champion
from tests.conftest import SMOKE_TRAINING, TRAINED_DAY
from training import registry, run

pytestmark = pytest.mark.spark

LAST_DAY = TRAINED_DAY
SMOKE = SMOKE_TRAINING


@pytest.fixture(scope="module")
def smoke(smoke_training):
    return smoke_training


@pytest.fixture(scope="module")
def first_run(trained_tmall):
    return trained_tmall[0]


@pytest.fixture(scope="module")
def prepared(smoke, tmp_path_factory):
    """The first run's split, examples and features, prepared once for the tests that train single models (each
    trains with its own seed: checkpoints are per model and seed)."""
    return run.prepare(smoke, LAST_DAY, seed=0, work_dir=tmp_path_factory.mktemp("prepared"))


def _count(settings, what: str, where: str) -> int:
    """An independent count over the examples mart (DuckDB SQL, not the training code)."""
    path = settings.warehouse_root / "marts" / "parquet" / "training_examples" / "*.parquet"
    return duckdb.sql(f"select count({what}) from read_parquet('{path}') where {where}").fetchall()[0][0]


def test_the_split_leaves_no_training_day_inside_the_evaluation_window(first_run):
    assert first_run["split"] == {
        "train": ["2014-04-15", "2014-06-19"],
        "validation": ["2014-06-19", "2014-07-17"],
        "evaluation": ["2014-07-17", "2014-08-16"],
    }


def test_models_land_with_embeddings_metrics_and_a_manifest(smoke, first_run):
    known_users = _count(smoke, "distinct user_id", "ds <= date '2014-08-15'")
    train_items = _count(smoke, "distinct item_id", "ds < date '2014-06-19'")
    buyers = _count(smoke, "distinct user_id", "ds >= date '2014-07-17' and label = 4")
    for kind in ("gnolr", "esmm"):
        directory = registry.model_dir(smoke.warehouse_root, kind, "2014-08-15")
        assert {p.name for p in directory.iterdir()} == {
            "weights.pt",
            "user_embeddings.parquet",
            "item_embeddings.parquet",
            "metrics.json",
            "manifest.json",
            "anchors",
        }
        users = pq.read_table(directory / "user_embeddings.parquet")
        items = pq.read_table(directory / "item_embeddings.parquet")
        # every user known by E gets a vector; only the items the model trained on are retrieved
        assert users.num_rows == known_users and items.num_rows == train_items
        vectors = np.stack(users.column("embedding").to_numpy(zero_copy_only=False))
        assert vectors.shape[1] == 4 * SMOKE["dim"]  # T = 4 boundaries for click < collect < cart < buy
        norms = np.linalg.norm(vectors.reshape(len(vectors), 4, SMOKE["dim"]), axis=2)
        assert np.allclose(norms, 1.0, atol=1e-4)  # each sub-embedding L2-normalised
        manifest = json.loads((directory / "manifest.json").read_text())
        real = manifest["negatives"]["train"]["real"]
        assert real == _count(smoke, "*", "ds < date '2014-06-19'")
        # each window reads exactly its days of the mart, both ends
        windows = {"validation": ("2014-06-19", "2014-07-17"), "evaluation": ("2014-07-17", "2014-08-16")}
        for name, (lo, hi) in windows.items():
            where = f"ds >= date '{lo}' and ds < date '{hi}'"
            assert manifest["negatives"][name]["real"] == _count(smoke, "*", where), name
        assert manifest["data_range"]["evaluation"] == ["2014-07-17", "2014-08-16"]
        assert manifest["embeddings_as_of"] == "2014-08-16" and manifest["code_version"]
        assert len(manifest["base_rates"]) == 4 and manifest["base_rates"] == sorted(manifest["base_rates"])[::-1]
        # the held-out model's embeddings at every anchor from the models' cut-off on (before S)
        anchors = sorted(p.name for p in (directory / "anchors").iterdir())
        assert anchors == [f"ds={d}" for d in manifest["anchor_embeddings"]] and anchors
        assert all(d >= "2014-06-19" and d < "2014-08-16" for d in manifest["anchor_embeddings"])
        metrics = first_run["models"][kind]["metrics"]
        assert metrics["eval_users"] == buyers
        for key in ("auc_c1", "auc_c2", "auc_c3", "auc_sampled_c0", "auc_mean", "gauc_top"):
            assert 0.0 <= metrics[key] <= 1.0
        assert all(0.0 <= metrics[f"{m}@20"] <= 1.0 for m in ("recall", "ndcg", "mrr", "coverage"))
        assert champion(Warehouse.of(smoke), kind)["version"] == "2014-08-15"
        assert first_run["models"][kind]["gate"]["reason"] == "no champion yet"
        assert first_run["models"][kind]["gate"]["metric"] == "auc_mean"  # ordinal models classify
    gnolr = registry.model_dir(smoke.warehouse_root, "gnolr", "2014-08-15")
    log_q = pq.read_table(gnolr / "item_embeddings.parquet").column("log_q").to_numpy()
    assert np.all(log_q < 0) and np.exp(log_q).sum() < 1  # log q(item), item 0 (never seen) holds the rest
    # GNOLR's raw inner product retrieves the long tail; log q added back retrieves what buyers buy
    gnolr_metrics = first_run["models"]["gnolr"]["metrics"]
    assert gnolr_metrics["recall@20"] > gnolr_metrics["uncorrected_recall@20"]
    two_tower = registry.model_dir(smoke.warehouse_root, "two_tower", "2014-08-15")
    vectors = np.stack(pq.read_table(two_tower / "user_embeddings.parquet").column("embedding").to_numpy(False))
    assert vectors.shape == (known_users, smoke.training.retrieval_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert first_run["models"]["two_tower"]["gate"]["metric"] == "ndcg@20"  # the two-tower model retrieves
    assert not any((smoke.warehouse_root / "models" / "_work").iterdir())  # work files of finished runs are removed


def test_a_rerun_rescores_the_champion_on_the_same_window_and_is_reproducible(smoke, first_run):
    second = run.run(smoke, LAST_DAY)
    for kind in ("two_tower", "gnolr", "esmm"):
        gate = second["models"][kind]["gate"]
        metric = gate["metric"]
        assert gate["reason"] == "not worse than the champion beyond the tolerance", gate
        # the champion is the first run's model: re-scored on the same window it gives the first run's figure
        assert gate["champion"] == pytest.approx(first_run["models"][kind]["metrics"][metric], abs=1e-9)
        # same data, seed and code: the same model
        assert second["models"][kind]["metrics"][metric] == pytest.approx(
            first_run["models"][kind]["metrics"][metric], abs=1e-9
        )


def test_the_two_tower_model_stops_on_the_recall_of_the_validation_purchases(smoke, prepared):
    """Its in-batch loss is not what it is used for: the epoch kept is the one whose lists as of the validation start
    found most of the validation days' purchases (recomputed here), over the items the model trained on only."""
    import torch

    from training import metrics

    device = torch.device("cpu")
    longer = smoke.with_overrides(training=replace(smoke.training, epochs=3, patience=5))
    model, fit = run.train_model("two_tower", prepared, longer, 4, device, False)
    scores = [h["validation_score"] for h in fit.history]
    assert len(scores) == 3 and fit.best_epoch == 1 + int(np.argmax(scores))
    buyers = sorted(prepared.validation_relevant)
    source = run.embedding_source(model, "two_tower", prepared, smoke, buyers, prepared.split.validation[0], device)
    lists = source.top(buyers, run.K)
    assert metrics.ranking_metrics(lists, prepared.validation_relevant, run.K).recall == pytest.approx(max(scores))
    assert {i for items in lists.values() for i in items} <= set(prepared.items.ids)  # never an unseen item
    assert not model.item.ids.weight[0].any() and not model.user.ids.weight[0].any()  # id 0 is padding: zero


def test_a_killed_run_resumes_after_its_last_finished_epoch(smoke, prepared):
    import torch

    device = torch.device("cpu")
    _, first = run.train_model("gnolr", prepared, smoke, 0, device, False)  # epochs=1: "killed" after epoch 1
    assert first.epochs_run == 1 and first.resumed_from_epoch == 0
    longer = smoke.with_overrides(training=replace(smoke.training, epochs=2, patience=5))
    _, resumed = run.train_model("gnolr", prepared, longer, 0, device, False)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == pytest.approx(first.history[0], nan_ok=True)  # epoch 1 was not run again


def test_an_earlier_champion_with_another_vocabulary_is_rescored_on_the_same_rows(smoke, prepared):
    """Re-scoring a champion re-indexes users, items and the items inside the sequences into its own vocabulary: a
    copy of a model whose vocabularies (and embedding rows) are permuted must give exactly the same scores."""
    import copy

    import torch

    from training import data

    device = torch.device("cpu")
    model, _ = run.train_model("gnolr", prepared, smoke, 1, device, False)
    users = data.Vocabulary(tuple(reversed(prepared.users.ids)))
    items = data.Vocabulary(tuple(reversed(prepared.items.ids)))
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        for table, vocabulary in ((permuted.user.ids, prepared.users), (permuted.item.ids, prepared.items)):
            order = torch.as_tensor([0, *range(len(vocabulary) - 1, 0, -1)])  # new index j holds old row order[j]
            table.weight.copy_(table.weight[order])
    expected = run.score_exposures(model, prepared.evaluation, device)
    own = prepared.vocabularies
    got = run.score_exposures(permuted, prepared.evaluation, device, own._replace(users=users, items=items), own)
    assert np.allclose(got, expected, atol=1e-5)
    # without re-indexing the permuted model's scores differ: the check above is not vacuous
    assert not np.allclose(run.score_exposures(permuted, prepared.evaluation, device), expected, atol=1e-3)


def test_ordinal_models_keep_the_epoch_with_the_best_validation_auc(smoke, prepared):
    """The score early stopping watches is the mean AUC over the level boundaries on the validation days, and the
    model comes back with the weights of the epoch that scored best (recomputed here from the validation rows)."""
    import torch

    from training import data, metrics

    device = torch.device("cpu")
    longer = smoke.with_overrides(training=replace(smoke.training, epochs=2, patience=5))
    model, fit = run.train_model("bce", prepared, longer, 3, device, False)
    scores = [h["validation_score"] for h in fit.history]
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)
    assert fit.best_epoch == 1 + int(np.argmax(scores)) and fit.best_validation_score == max(scores)
    categories = data.read_all(prepared.validation, ["category"])["category"].to_numpy()
    exceed = run.score_exposures(model, prepared.validation, device)
    real = categories >= 1
    aucs = [metrics.auc(categories > 0, exceed[:, 0])]
    aucs += [metrics.auc(categories[real] > c, exceed[real, c]) for c in range(1, prepared.levels)]
    assert np.mean(aucs) == pytest.approx(max(scores), abs=1e-9)


def test_features_fetched_per_distinct_key_equal_a_join_per_example_row(smoke, prepared, tmp_path):
    """fetch_features asks Feast once per distinct (user, day) and (item, day) and spreads the answer over the rows;
    the encoded files must equal those of a point-in-time join per example row (real examples with their sampled
    negatives, two chunks, keys repeated within and across days)."""
    from nightrec import feature_store
    from training import data

    examples = prepared.train_examples
    days = sorted(examples["ds"].unique())[-4:]
    real = examples[examples["ds"].isin(days)].reset_index(drop=True)
    popularity = examples["item_id"].value_counts().sort_index()
    negatives = data.sample_negatives(real, popularity, 2, np.random.default_rng(0)).rows
    frame = pd.concat([real, negatives], ignore_index=True)
    assert frame.duplicated(["user_id", "ds"]).any() and frame.duplicated(["item_id", "ds"]).any()
    two_day_chunks = smoke.with_overrides(training=replace(smoke.training, feature_chunk_days=2))
    files = data.fetch_features(two_day_chunks, frame, *prepared.vocabularies, tmp_path / "per-key")
    assert len(files.paths) == 2 and files.rows == len(frame)
    got = pq.read_table(files.paths[0]).to_pandas()

    first = frame[frame["ds"].isin(days[:2])].reset_index(drop=True)
    entity_df = (
        first[["user_id", "item_id"]]
        .astype(str)
        .assign(event_timestamp=pd.to_datetime(first["example_ts"]).dt.tz_localize("UTC"), row_id=np.arange(len(first)))
    )
    feats = feature_store.historical_features(smoke, entity_df).sort_values("row_id").reset_index(drop=True)
    expected = {
        "user_dense": data.encode_dense(feats, files.user_columns),
        "item_dense": data.encode_dense(feats, files.item_columns),
        **dict(
            zip(
                ("seq_items", "seq_levels", "seq_gaps"),
                data.encode_sequences(feats, prepared.items, smoke.pipeline.sequence_length),
                strict=True,
            )
        ),
    }
    assert files.user_columns == data.numeric_feature_columns(feats, data.USER_VIEWS)
    assert files.item_columns == data.numeric_feature_columns(feats, data.ITEM_VIEWS)
    assert got["user_id"].tolist() == first["user_id"].astype(str).tolist()
    assert got["item_id"].tolist() == first["item_id"].astype(str).tolist()
    for name, want in expected.items():
        assert np.array_equal(np.stack(got[name].to_numpy()), want), name
    assert expected["user_dense"][:, -1].sum() > 0 and expected["seq_items"].any()  # real features, not all padding


# How far one process's figures move from seed to seed on these marts (smoke sizes, seeds 0-2, measured with
# `training.run.train_models` on stop 36's e2e warehouse): Recall@20 0.061-0.072 (two-tower) and 0.060-0.074
# (GNOLR), NDCG@20 0.033-0.038 (two-tower), GNOLR's mean AUC 0.587-0.601. Two processes must land inside that.
SEED_SPREAD = {"recall@20": 0.014, "ndcg@20": 0.005, "auc_mean": 0.013}


def test_two_data_parallel_processes_train_models_that_score_like_one(smoke, first_run):
    """training.processes = 2: torchrun starts two CPU processes (gloo), each trains on half of every step's examples
    with the gradients averaged, rank 0 evaluates and writes; the models score as the one-process run of the same seed
    does, within the seed-to-seed spread."""
    settings = smoke.with_overrides(training=replace(smoke.training, processes=2, models=("two_tower", "gnolr")))
    version = "data-parallel-test"
    try:
        report = run.train_models(settings, LAST_DAY, 0, version, None, gate_champions=False)
        written = registry.model_dir(smoke.warehouse_root, "gnolr", version)
        manifest = json.loads((written / "manifest.json").read_text())
    finally:
        for kind in settings.training.models:
            shutil.rmtree(registry.model_dir(smoke.warehouse_root, kind, version), ignore_errors=True)
    assert report["processes"] == 2 and manifest["processes"] == 2
    assert report["split"] == first_run["split"]
    for kind, metrics in (("two_tower", ("recall@20", "ndcg@20")), ("gnolr", ("recall@20", "auc_mean"))):
        ours, one = report["models"][kind]["metrics"], first_run["models"][kind]["metrics"]
        assert ours["eval_users"] == one["eval_users"]
        for metric in metrics:
            assert abs(ours[metric] - one[metric]) <= SEED_SPREAD[metric], (kind, metric, ours[metric], one[metric])
        assert report["models"][kind]["gate"]["reason"] == "not gated (benchmark)"
    assert champion(Warehouse.of(smoke), "gnolr")["version"] == "2014-08-15"  # the champions are untouched

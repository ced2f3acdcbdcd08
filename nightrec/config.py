"""All configuration of the project, in one typed place.

A *profile* (``conf/profiles/<name>.yaml``; ``local`` by default, ``cluster`` for a Spark cluster) sets the
engines and paths; environment variables override single values so that Airflow tasks, spark-submit and
tests can point the same code at another warehouse without editing files:

==========================  =========================================================
NIGHTREC_PROFILE            profile name (default ``local``)
NIGHTREC_WAREHOUSE_ROOT     warehouse root directory
NIGHTREC_SOURCE             source profile (``tmall_brand`` by default; see conf/sources/)
NIGHTREC_SPARK_MASTER       Spark master URL (``local[*]``, ``spark://host:7077``, ``yarn`` ...)
NIGHTREC_RUN_DATE           the day D a one-off command processes (YYYY-MM-DD)
NIGHTREC_AIRFLOW_HOME       Airflow home (metadata DB, logs)
NIGHTREC_FEAST_VARIANT      Feast variant (``local``, ``redis``, ``production``)
NIGHTREC_DBT_TARGET         the target dbt's profiles.yml picks (set per dbt call)
NIGHTREC_SET                any other setting: ``section.key=value`` entries separated by ``;``
                            (``training.eval_days=7; ranker.sources=history,popular_30d``);
                            the CLI's ``--set section.key=value`` adds entries
==========================  =========================================================

:meth:`Settings.environment` writes them for a child process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from nightrec.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# JVM options for Spark jobs that last seconds (SparkSettings.java_options): the JIT's optimising compiler and the
# parallel collector's threads cost more CPU than they save there. The test suite runs every job so (decision 52).
SHORT_JOBS_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
# The embedding models training/ can train: the two-tower retrieval model, GNOLR and its ordinal baselines (the
# `_paper` heads score sigmoid(cos) with no scale or bias, as the GNOLR paper's baselines do).
MODEL_KINDS = ("two_tower", "gnolr", "bce", "esmm", "nolr", "bce_paper", "esmm_paper")
ORDINAL_KINDS = MODEL_KINDS[1:]
# The candidate sources of the published lists (RankerSettings.sources); the models among them are embedding models.
CANDIDATE_SOURCES = (
    "history",
    "covisitation",
    "transitions",
    "popular_7d",
    "popular_30d",
    "trending",
    "segment_popular",
    "two_tower",
    "gnolr",
)
PROFILES_DIR = PROJECT_ROOT / "conf" / "profiles"
SOURCES_DIR = PROJECT_ROOT / "conf" / "sources"


@dataclass(frozen=True)
class SparkSettings:
    """How Spark jobs run.

    :param master: Spark master URL; ``local[*]`` on one machine, a cluster URL at scale.
    :param driver_memory: driver memory for spark-submit, in-process sessions and the sessions of Feast's production
        variant (e.g. ``4g``).
    :param shuffle_partitions: ``spark.sql.shuffle.partitions``; small on a laptop, larger on a cluster.
    :param java_options: JVM options of the driver and the executors (``spark.driver.extraJavaOptions`` and
        ``spark.executor.extraJavaOptions``; an entry of ``conf`` with either name wins). Empty: the JVM's defaults.
        Jobs that last seconds spend less CPU with :data:`SHORT_JOBS_JAVA_OPTIONS` (the test suite runs so,
        decision 52); long jobs on real data want the defaults.
    :param conf: any further ``spark.*`` settings passed through unchanged.
    """

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    java_options: str = ""
    conf: dict[str, str] = field(default_factory=dict)

    def all_conf(self) -> dict[str, str]:
        """The complete ``spark.*`` configuration the jobs run with."""
        base = {
            # One clock for the whole warehouse: every timestamp is UTC (docs/architecture.md, "Time").
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            # Parquet timestamps as UTC microseconds (not legacy INT96), as pandas, DuckDB and Feast expect.
            "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
            # Deterministic file layout: one writer task per ds partition, no speculative duplicates.
            "spark.speculation": "false",
            "spark.ui.showConsoleProgress": "false",
        }
        if self.java_options:  # read when a JVM starts: spark-submit and a session's launch pass them on
            base["spark.driver.extraJavaOptions"] = self.java_options
            base["spark.executor.extraJavaOptions"] = self.java_options
        base.update(self.conf)
        return base


@dataclass(frozen=True)
class PipelineSettings:
    """Behaviour of the nightly jobs.

    :param sequence_length: N, the number of most recent behaviour tokens kept per user sequence.
    :param lookback_days: how many days before D a nightly run re-reads, so late deliveries are ingested.
    """

    sequence_length: int = 50
    lookback_days: int = 2


@dataclass(frozen=True)
class QualitySettings:
    """Great Expectations checks at the zone boundaries (raw landing, bronze, marts).

    :param max_bad_row_fraction: share of a run's raw rows that may fail a row-level expectation (nulls,
        unknown event type, time outside the delivery day). Up to it the rows are quarantined by ingest and the
        check is recorded as a warning; above it the run stops before ingest.
    :param sample_rows: offending rows quoted in a failure message.
    :param check_chunk_days: the raw, bronze and daily marts' checks of a run validate this many days at a time,
        so their pandas frames hold one chunk's rows, not a whole bootstrap's (decisions 39, 41). Row-level
        tolerances, the uniqueness of event ids and the row counts hold within each chunk; a nightly run's few days
        are one chunk.
    """

    max_bad_row_fraction: float = 0.01
    sample_rows: int = 5
    check_chunk_days: int = 14


@dataclass(frozen=True)
class FeastSettings:
    """The Feast feature store (feature_repo/).

    :param variant: which ``feature_repo/feature_store.<variant>.yaml`` to use: ``local`` (SQLite online store,
        DuckDB offline store, file registry), ``redis`` (Redis online store) or ``production`` (Redis, Postgres
        registry, Spark offline store and Spark materialization); connection strings come from NIGHTREC_REDIS /
        NIGHTREC_FEAST_REGISTRY.
    :param materialize_chunk_days: data days per materialization call (progress per chunk).
    :param fetch_batch_rows: entity rows per point-in-time (``get_historical_features``) call. The offline join's
        memory grows with the rows of one call (on DuckDB also with the feature files, which it reads whole;
        decision 33), so a training set is fetched in batches of this many rows: the same rows, a lower peak.
    """

    variant: str = "local"
    materialize_chunk_days: int = 14
    fetch_batch_rows: int = 20_000


@dataclass(frozen=True)
class TrainingSettings:
    """Nightly training (training/): splits, sampling, model sizes, optimisation and the champion gate.

    Splits (no leakage): with the run's last data day E, evaluation uses the days [T, E] where T = E - eval_days + 1;
    the retrieval and ordinal models train on the days before C = T - ranker_days and stop early on [C, T); the
    ranker's anchors on or after C carry their scores (older anchors have none; see RankerSettings).

    :param device: ``auto`` (CUDA with mixed precision when a GPU is present, else CPU), ``cpu`` or ``cuda``.
    :param seed: seed for sampling, initialisation and batch order.
    :param eval_days: days at the end of the data kept for evaluation (the fixed cut-off T of the 30-day horizon).
    :param ranker_days: days before T on which the models stop early (the two-tower model on Recall@20 of the
        purchases in them, the ordinal models on their AUC per level); the models train on the days before.
    :param negatives: sampled items the user did not touch per real exposure (the lowest ordinal category),
        drawn by popularity.
    :param dim: size of each sub-embedding (a tower gives one per level boundary).
    :param hidden: width of the towers' shared layers.
    :param gamma: scale of the cosine similarities in the ordinal models.
    :param learnable_cut_points: GNOLR's order-preserving learnable cut-points instead of the fixed base-rate ones.
    :param epochs: maximum passes over the training examples.
    :param batch_size: examples per optimisation step.
    :param learning_rate: Adam's learning rate.
    :param patience: epochs without a better validation criterion before training stops early (the ordinal models:
        mean AUC over the level boundaries on the validation days; the two-tower model: Recall@20 of the validation
        days' purchases).
    :param feature_chunk_days: days of examples per ``get_historical_features`` call (bounded memory).
    :param models: the embedding models trained each run: ``two_tower`` (retrieval, sampled softmax) and ``gnolr``
        (ordinal), the candidate sources and scores the ranker uses; GNOLR's baselines ``bce``, ``esmm``, ``nolr`` (and
        their paper-style heads ``bce_paper``, ``esmm_paper``) are for benchmarks/training_quality.py.
    :param retrieval_dim: embedding size of the two-tower retrieval model.
    :param temperature: softmax temperature of the two-tower retrieval model.
    :param ranker: train the LightGBM ranker of the published lists (RankerSettings) after the models.
    :param champion_tolerance: how much worse than the champion (absolute, on the gate metric) a new model may be and
        still be published.
    :param refit: train each model again on every day through E (as many epochs as early stopping chose) and export
        that model's embeddings for E + 1: they then know the users and items of the last eval_days + ranker_days
        days, which single-model lists (topk.model set to a model) need. Off by default: the ranker's lists score
        every anchor, E + 1 included, with the held-out model, the one whose scores the ranker learned from, and a
        refit costs a second training of every model (66 s of a 195 s Tmall night on 2 cores). The held-out model is
        kept (evaluated.pt) beside a refit: its metrics are reported and the gate re-scores it.
    :param processes: data-parallel training processes (training/distributed.py). Above 1 the models train in that
        many processes started by torchrun, each on its share of every step's examples (``batch_size`` is the
        examples of one step over all of them), their gradients averaged: one per GPU on a GPU machine, CPU
        processes elsewhere.
    """

    device: str = "auto"
    seed: int = 0
    eval_days: int = 30
    ranker_days: int = 28
    negatives: int = 4
    dim: int = 16
    hidden: int = 64
    gamma: float = 5.0
    learnable_cut_points: bool = False
    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 0.003
    patience: int = 2
    feature_chunk_days: int = 30
    models: tuple[str, ...] = ("two_tower", "gnolr")
    retrieval_dim: int = 32
    temperature: float = 0.05
    ranker: bool = True
    champion_tolerance: float = 0.005
    refit: bool = False
    processes: int = 1


@dataclass(frozen=True)
class RankerSettings:
    """The published lists: candidates from several sources, features, a LightGBM ranker (training/ranker.py) over
    anchors (spark_jobs/build_candidates.py builds them; nightrec/anchors.py plans them).

    An anchor A is a day on which lists are made from the data before it. Training anchors lie on a grid A = S -
    horizon_days - k * anchor_every_days (S = E + 1, the day the published lists are for), each labelled with the
    highest level every candidate reached in [A, A + horizon_days); the ranker evaluated on the held-out window
    uses only the anchors whose labels end by its start T, the published one every anchor.

    :param sources: candidate sources, merged and deduplicated: ``history`` (every item of the user's history, no
        cap), ``covisitation`` (items engaged the same day by the same users as the user's last active day's items,
        30 days), ``transitions`` (items bought within 7 days after the user's recent items, 60 days),
        ``popular_7d`` and ``popular_30d`` (distinct users), ``trending`` (7 days against the 30-day average),
        ``two_tower`` and ``gnolr`` (each model's top items by inner product; gnolr's with log q(item) added back).
    :param candidates_per_source: items each source but ``history`` proposes (``popular_30d`` at least topk.k, so a
        list can always be filled).
    :param horizon_days: a training anchor's label window.
    :param anchor_every_days: spacing of the training anchors.
    :param max_anchors: the most recent training anchors used.
    :param min_history_days: an anchor needs this many days of data before it.
    :param objective: LightGBM objective: ``binary`` (purchase or not; the default, picked on validation by
        benchmarks/training_quality.py --select), ``lambdarank`` or ``rank_xendcg``.
    :param label_gain: lambdarank's gain per label 0..L (the highest level reached in the window); empty: purchases
        only.
    :param num_leaves: LightGBM leaves per tree (with ``rounds``, compared on validation by
        benchmarks/training_quality.py --select: the validation NDCG@20 is flat around these values).
    :param learning_rate: LightGBM learning rate.
    :param rounds: boosting rounds.
    :param min_data_in_leaf: LightGBM's minimum rows per leaf.
    :param refresh_every_days: spacing of the evaluation anchors of the 7-day horizon inside the held-out window (the
        nightly report's; benchmarks/training_quality.py refreshes every night).
    """

    sources: tuple[str, ...] = CANDIDATE_SOURCES
    candidates_per_source: int = 50
    horizon_days: int = 7
    anchor_every_days: int = 7
    max_anchors: int = 52
    min_history_days: int = 28
    objective: str = "binary"
    label_gain: tuple[float, ...] = ()
    num_leaves: int = 7
    learning_rate: float = 0.02
    rounds: int = 300
    min_data_in_leaf: int = 50
    refresh_every_days: int = 7


@dataclass(frozen=True)
class TopkSettings:
    """Precomputed top-k lists (spark_jobs/score_topk.py), published to serving/topk/ and the online store.

    :param k: items per user (fewer only where fewer items are eligible).
    :param model: ``ranker`` (the default): the night's candidates ranked by the LightGBM ranker, or the best baseline's
        list when the ranker does not beat it on the held-out window; or one model whose champion's user and item
        embeddings score the whole catalogue (``two_tower``, ``gnolr``, ``bce``, ``esmm``, ``nolr``; ordinal models also
        give per-level probabilities).
    :param exclude_bought: leave out items the user already bought (off by default: people rebuy).
    :param users_per_batch: users scored per Arrow batch inside a Spark task (bounds the score matrix in memory).
    :param keep_versions: published versions kept on disk besides the current one (rollback targets).
    """

    k: int = 100
    model: str = "ranker"
    exclude_bought: bool = False
    users_per_batch: int = 2048
    keep_versions: int = 3


# The consumer encoder's self-supervised objectives (training/consumer_encoder.py); "both" = masked + contrastive
ENCODER_OBJECTIVES = ("masked", "contrastive", "future")


def encoder_objectives(objective: str) -> frozenset[str]:
    """The objectives ``objective`` sums (joined by "+", "both" = masked + contrastive); empty when any is unknown."""
    parts = set(objective.split("+"))
    if "both" in parts:
        parts = (parts - {"both"}) | {"masked", "contrastive"}
    return frozenset(parts) if parts <= set(ENCODER_OBJECTIVES) else frozenset()


@dataclass(frozen=True)
class SegmentSettings:
    """Consumer segments (UNICON): the nightly consumer encoder (training/consumer_embeddings.py) and the segments job
    (spark_jobs/build_segments.py) that clusters its embeddings and profiles the clusters.

    :param enabled: train the encoder and build the segments every night (the nightly DAG's ``segments`` group).
    :param objective: the encoder's self-supervised objective: ``masked`` item, ``contrastive`` views, ``future``
        items or ``both`` (masked + contrastive); several are summed when joined by ``+`` (``both+future``).
    :param epochs: encoder epochs; the one kept has the best validation lookalike recall (not the lowest loss).
    :param learning_rate: the encoder's learning rate from a random start (the first night, or a changed shape).
    :param fine_tune_learning_rate: its learning rate on a night that continues from the previous night's weights:
        one day of new behaviour should move consumers a little, not redraw the map (a consumer's segment follows
        their vector, so this step sets how many change segment overnight: decision 54).
    :param dim: consumer embedding width.
    :param layers: transformer layers.
    :param k: a fixed number of segments; 0 chooses k by silhouette over [k_min, k_max].
    :param k_min: smallest k tried.
    :param k_max: largest k tried.
    :param kmeans_starts: the fresh clustering of the k that silhouette chose is the best of this many seeded k-means||
        starts (the lowest within-segment sum of squares): one start's local optimum depends on its draw and on the
        data's partitioning, and segments first drawn from a poor one are re-drawn the night a better one turns up.
    :param keep_margin: a night continues the previous night's segments (k-means started from their centroids, ids
        kept) unless a fresh clustering's silhouette is higher by more than this; segments that change every night
        cannot be named or used.
    :param profile_items: the most over-represented items (by lift) each segment profile lists.
    :param min_item_users: an item enters a segment's profile only when at least this many of its consumers touched it
        (a lift over a handful of people is noise).
    """

    enabled: bool = True
    objective: str = "both"
    epochs: int = 8
    learning_rate: float = 2e-3
    fine_tune_learning_rate: float = 5e-5
    dim: int = 64
    layers: int = 2
    k: int = 0
    k_min: int = 4
    k_max: int = 12
    kmeans_starts: int = 4
    keep_margin: float = 0.02
    profile_items: int = 10
    min_item_users: int = 5


@dataclass(frozen=True)
class AlertSettings:
    """Who hears of a failed task or a stopped run (nightrec/notify.py). Each notifier is a ``scheme:target`` text:

    - ``file:<path>``: one JSON line per event appended to the file (relative paths are under the warehouse root);
    - ``webhook:<http(s) URL>``: the event POSTed as JSON (Slack-, Teams- or Alertmanager-style receivers take it
      through their own adapters);
    - ``python:<module>:<function>``: a function of yours, called with the event (a pager, a ticket).

    :param notifiers: the notifiers every event goes to, in order. The default keeps a file of them in the warehouse.
    :param webhook_timeout_seconds: how long a webhook may take before the notification counts as failed (a failed
        notification is logged and recorded; it never hides the failure it was about).
    """

    notifiers: tuple[str, ...] = ("file:alerts/alerts.jsonl",)
    webhook_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class RetentionSettings:
    """How long the nightly outputs are kept (nightrec/retention.py, the nightly DAG's ``apply_retention`` task).

    :param days: night D removes the candidates, top-k versions, model versions, segment partitions and run
        manifests of days before D - days + 1; 0 keeps everything. Never removed: the served top-k version and the
        rollback targets its pointer names, each model's champion, the newest version of every output (the next
        night continues from them), and the inputs (raw, bronze, silver, marts: the history the models learn from).
    """

    days: int = 0


MIN_RETENTION_DAYS = 7  # a shorter horizon would remove what the night after reads (segments of night A - 2)


@dataclass(frozen=True)
class AirflowSettings:
    """How the project drives Airflow.

    :param home: AIRFLOW_HOME (SQLite metadata DB and logs by default).
    :param spark_conn_id: the Airflow connection SparkSubmitOperator uses; it is generated from ``spark.master``.
    :param sql_alchemy_conn: metadata DB URL without a password; empty means SQLite under ``home``. A URL with
        credentials is a secret: the deployment sets Airflow's own ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, which
        wins over this (nightrec_app/airflow_env.py), and no profile in the repository holds one.
    :param executor: Airflow's executor (``LocalExecutor`` with a real scheduler on Postgres); empty leaves
        Airflow's default.
    :param task_retries: retries per task (0 locally so a failure shows at once; more on a cluster).
    :param retry_delay_seconds: how long a failed task waits before its retry (a lost executor or a killed worker
        often needs a moment to come back).
    :param dbt_pool: the Airflow pool every dbt task runs in (`nightrec setup-airflow` creates it). A real scheduler
        runs the dbt task group's independent models at once, and both local targets hold one writer at a time (the
        DuckDB file; the spark target's embedded Derby metastore).
    :param dbt_pool_slots: dbt tasks at once: 1 for those targets; more only against a Spark Thrift Server.
    :param catchup: the nightly DAG's catch-up: a scheduler started (or unpaused) late runs every missed night from
        its first night, one at a time. Off, it runs only the latest night, and ``airflow backfill create`` runs the
        others you want.
    :param first_night: the nightly DAG's first night (YYYY-MM-DD; empty: the source's ``nightly_start``). Set it
        where the warehouse was bootstrapped past ``nightly_start`` (``nightrec bootstrap --end``), so that a
        scheduler's catch-up starts after the bootstrap's last day instead of rebuilding the nights it made.
    """

    home: Path
    spark_conn_id: str = "nightrec_spark"
    sql_alchemy_conn: str = ""
    executor: str = ""
    task_retries: int = 0
    retry_delay_seconds: int = 120
    dbt_pool: str = "nightrec_dbt"
    dbt_pool_slots: int = 1
    catchup: bool = True
    first_night: str = ""


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one run.

    :param profile: the profile name the settings came from.
    :param warehouse_root: root of every data zone (raw, bronze, silver, marts, models, serving).
    :param source: the source profile (one warehouse per source, see docs/architecture.md).
    :param spark: Spark settings.
    :param pipeline: job behaviour.
    :param airflow: Airflow settings.
    :param quality: data quality checks.
    :param feast: the feature store.
    :param training: nightly model training.
    :param ranker: the candidate -> rank pipeline of the published lists.
    :param topk: the precomputed top-k lists.
    :param segments: consumer segments (the encoder and the segments job).
    :param alerts: the notifiers of failed tasks and stopped runs.
    :param retention: how long the nightly outputs are kept.
    :param dbt_target: ``duckdb`` (default, embedded) or ``spark``.
    :param duckdb_memory_limit: the memory dbt's DuckDB target may hold (DuckDB's ``memory_limit``, e.g. ``6GB``);
        past it DuckDB spills to a directory beside its database file. DuckDB's own default is 80% of the machine,
        which does not leave room for the process it runs in (decision 40).
    :param run_date: the day D a one-off command processes, if given.
    """

    profile: str
    warehouse_root: Path
    source: str
    spark: SparkSettings
    pipeline: PipelineSettings
    airflow: AirflowSettings
    quality: QualitySettings = field(default_factory=QualitySettings)
    feast: FeastSettings = field(default_factory=FeastSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    ranker: RankerSettings = field(default_factory=RankerSettings)
    topk: TopkSettings = field(default_factory=TopkSettings)
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    dbt_target: str = "duckdb"
    duckdb_memory_limit: str = "6GB"
    run_date: date | None = None
    overrides: str = ""  # the NIGHTREC_SET entries applied, carried to child processes by environment()

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some top-level fields replaced (tests and CLI flags use this)."""
        return replace(self, **changes)

    def environment(self) -> dict[str, str]:
        """The environment variables that carry these settings into another process: Airflow and its tasks,
        spark-submit, dbt (profiles.yml) and Feast (feature_store.yaml, definitions.py). :func:`load_settings` there
        reads the same profile, warehouse, source, Spark master, Airflow home and Feast variant back; dbt's
        profiles.yml picks its target from ``NIGHTREC_DBT_TARGET``. The one place that knows these names."""
        return {
            "NIGHTREC_PROFILE": self.profile,
            "NIGHTREC_WAREHOUSE_ROOT": str(self.warehouse_root),
            "NIGHTREC_SOURCE": self.source,
            "NIGHTREC_SPARK_MASTER": self.spark.master,
            "NIGHTREC_AIRFLOW_HOME": str(self.airflow.home),
            "NIGHTREC_FEAST_VARIANT": self.feast.variant,
            "NIGHTREC_DBT_TARGET": self.dbt_target,
            "NIGHTREC_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit,
            **({SET_VARIABLE: self.overrides} if self.overrides else {}),
            # No telemetry: the machines this runs on are often offline, and a shop's data stays in the shop.
            "FEAST_USAGE": "False",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        }


_TOP_KEYS = {
    "warehouse_root",
    "source",
    "spark",
    "pipeline",
    "airflow",
    "quality",
    "feast",
    "training",
    "ranker",
    "topk",
    "segments",
    "alerts",
    "retention",
    "dbt_target",
    "duckdb_memory_limit",
    "run_date",
}


SET_VARIABLE = "NIGHTREC_SET"
# a size DuckDB's memory_limit accepts
_MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B)")
# the sections a ``section.key=value`` override may name, and their settings classes
_OVERRIDABLE: dict[str, type] = {
    "spark": SparkSettings,
    "pipeline": PipelineSettings,
    "airflow": AirflowSettings,
    "quality": QualitySettings,
    "feast": FeastSettings,
    "training": TrainingSettings,
    "ranker": RankerSettings,
    "topk": TopkSettings,
    "segments": SegmentSettings,
    "alerts": AlertSettings,
    "retention": RetentionSettings,
}


def how_to_set(*keys: str) -> str:
    """How a user changes settings (for messages that name them): the profile, the CLI or the environment."""
    example = "; ".join(f"{k}=N" for k in keys)
    flags = " ".join(f"--set {k}=N" for k in keys)
    return (
        f"set them in the profile (conf/profiles/<name>.yaml), on the command line (`nightrec ... {flags}`) "
        f"or in the environment ({SET_VARIABLE}='{example}')"
    )


def parse_overrides(text: str) -> dict[str, dict[str, str]]:
    """``section.key=value`` entries separated by ``;`` or new lines -> {section: {key: value}} (later entries win).

    :raises ConfigError: an entry that is not ``section.key=value`` or names an unknown section or key.
    """
    out: dict[str, dict[str, str]] = {}
    for entry in (e.strip() for e in text.replace("\n", ";").split(";")):
        if not entry:
            continue
        name, sep, value = entry.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"{SET_VARIABLE} entry {entry!r} is not section.key=value (e.g. training.eval_days=7)")
        cls = _OVERRIDABLE.get(section)
        if cls is None:
            known = sorted(_OVERRIDABLE)
            raise ConfigError(f"{SET_VARIABLE} entry {entry!r}: unknown section '{section}'; known: {known}")
        if key not in cls.__dataclass_fields__:
            raise ConfigError(
                f"{SET_VARIABLE} entry {entry!r}: unknown key '{key}' of '{section}'; known: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        out.setdefault(section, {})[key] = value.strip()
    return out


def _coerce(section: str, key: str, text: str) -> Any:
    """A setting's value from its text, by the field's type (int, float, bool, str, a tuple of them, a mapping)."""
    hint = str(get_type_hints(_OVERRIDABLE[section])[key])
    try:
        if hint == "<class 'bool'>":
            if text.lower() not in {"true", "false", "yes", "no", "1", "0", "on", "off"}:
                raise ValueError("expected true or false")
            return text.lower() in {"true", "yes", "1", "on"}
        if hint == "<class 'int'>":
            return int(text)
        if hint == "<class 'float'>":
            return float(text)
        if hint == "<class 'pathlib.Path'>":
            return Path(text)
        if hint.startswith("tuple"):
            items = [t.strip() for t in text.split(",") if t.strip()]
            return tuple(float(t) for t in items) if "float" in hint else tuple(items)
        if hint.startswith("dict"):
            raise ValueError("a mapping cannot be set this way; use the profile")
    except ValueError as exc:
        kind = hint.removeprefix("<class '").removesuffix("'>")
        raise ConfigError(f"{SET_VARIABLE}: {section}.{key}={text!r} is not a valid {kind}: {exc}") from exc
    return text


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _resolve(path: str | Path) -> Path:
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def _section(raw: dict[str, Any], key: str, cls: type, where: Path) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' in {where} must be a mapping, got {type(value).__name__}")
    allowed = set(cls.__dataclass_fields__)
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} under '{key}' in {where}; allowed: {sorted(allowed)}")
    return dict(value)


def load_settings(profile: str | None = None, env: dict[str, str] | None = None) -> Settings:
    """Load a profile and apply environment overrides.

    :param profile: profile name; defaults to ``$NIGHTREC_PROFILE`` or ``local``.
    :param env: the environment to read overrides from (defaults to ``os.environ``).
    :raises ConfigError: the profile file is missing, has unknown keys or invalid values.
    """
    env = dict(os.environ if env is None else env)
    name = profile or env.get("NIGHTREC_PROFILE") or "local"
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"Could not find profile '{name}' at {path}; known profiles: {known}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Could not parse {path}: {exc}") from exc
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in {path}; allowed: {sorted(_TOP_KEYS)}")

    spark_kw = _section(raw, "spark", SparkSettings, path)
    if "NIGHTREC_SPARK_MASTER" in env:
        spark_kw["master"] = env["NIGHTREC_SPARK_MASTER"]
    spark_kw["conf"] = {str(k): str(v) for k, v in (spark_kw.get("conf") or {}).items()}
    pipeline_kw = _section(raw, "pipeline", PipelineSettings, path)
    airflow_kw = _section(raw, "airflow", AirflowSettings, path)
    quality_kw = _section(raw, "quality", QualitySettings, path)
    feast_kw = _section(raw, "feast", FeastSettings, path)
    training_kw = _section(raw, "training", TrainingSettings, path)
    if "models" in training_kw:
        training_kw["models"] = tuple(training_kw["models"])
    ranker_kw = _section(raw, "ranker", RankerSettings, path)
    for key in ("sources", "label_gain"):
        if key in ranker_kw:
            ranker_kw[key] = tuple(ranker_kw[key])
    topk_kw = _section(raw, "topk", TopkSettings, path)
    segments_kw = _section(raw, "segments", SegmentSettings, path)
    alerts_kw = _section(raw, "alerts", AlertSettings, path)
    if "notifiers" in alerts_kw:
        alerts_kw["notifiers"] = tuple(alerts_kw["notifiers"] or ())
    retention_kw = _section(raw, "retention", RetentionSettings, path)
    if "NIGHTREC_FEAST_VARIANT" in env:
        feast_kw["variant"] = env["NIGHTREC_FEAST_VARIANT"]
    overrides = env.get(SET_VARIABLE, "")
    sections = {
        "spark": spark_kw,
        "pipeline": pipeline_kw,
        "airflow": airflow_kw,
        "quality": quality_kw,
        "feast": feast_kw,
        "training": training_kw,
        "ranker": ranker_kw,
        "topk": topk_kw,
        "segments": segments_kw,
        "alerts": alerts_kw,
        "retention": retention_kw,
    }
    for section, values in parse_overrides(overrides).items():
        for key, text in values.items():
            sections[section][key] = _coerce(section, key, text)
    airflow_kw["home"] = _resolve(env.get("NIGHTREC_AIRFLOW_HOME") or airflow_kw.get("home") or ".airflow")

    run_date_text = env.get("NIGHTREC_RUN_DATE") or raw.get("run_date")
    try:
        run_date = date.fromisoformat(str(run_date_text)) if run_date_text else None
    except ValueError as exc:
        raise ConfigError(f"run_date must be YYYY-MM-DD, got {run_date_text!r} (profile {path})") from exc

    settings = Settings(
        profile=name,
        warehouse_root=_resolve(env.get("NIGHTREC_WAREHOUSE_ROOT") or raw.get("warehouse_root") or "warehouse"),
        source=env.get("NIGHTREC_SOURCE") or raw.get("source") or "tmall_brand",
        spark=SparkSettings(**spark_kw),
        pipeline=PipelineSettings(**pipeline_kw),
        airflow=AirflowSettings(**airflow_kw),
        quality=QualitySettings(**quality_kw),
        feast=FeastSettings(**feast_kw),
        training=TrainingSettings(**training_kw),
        ranker=RankerSettings(**ranker_kw),
        topk=TopkSettings(**topk_kw),
        segments=SegmentSettings(**segments_kw),
        alerts=AlertSettings(**alerts_kw),
        retention=RetentionSettings(**retention_kw),
        dbt_target=str(raw.get("dbt_target") or "duckdb"),
        duckdb_memory_limit=str(raw.get("duckdb_memory_limit") or Settings.duckdb_memory_limit),
        run_date=run_date,
        overrides=overrides,
    )
    _validate(settings, f"{path}" + (f" with {SET_VARIABLE}={overrides!r}" if overrides else ""))
    return settings


def _validate(s: Settings, where: str | Path) -> None:
    if s.pipeline.sequence_length < 1:
        raise ConfigError(f"pipeline.sequence_length must be >= 1 (got {s.pipeline.sequence_length}) in {where}")
    if s.pipeline.lookback_days < 0:
        raise ConfigError(f"pipeline.lookback_days must be >= 0 (got {s.pipeline.lookback_days}) in {where}")
    if not 0 <= s.quality.max_bad_row_fraction < 1:
        raise ConfigError(
            f"quality.max_bad_row_fraction must be in [0, 1) (got {s.quality.max_bad_row_fraction}) in {where}"
        )
    if not _MEMORY_SIZE.fullmatch(s.duckdb_memory_limit):
        raise ConfigError(
            f"duckdb_memory_limit must be a size such as 6GB or 512MiB (got {s.duckdb_memory_limit!r}) in {where}"
        )
    if s.quality.check_chunk_days < 1:
        raise ConfigError(f"quality.check_chunk_days must be >= 1 (got {s.quality.check_chunk_days}) in {where}")
    if not (PROJECT_ROOT / "feature_repo" / f"feature_store.{s.feast.variant}.yaml").is_file():
        raise ConfigError(
            f"feast.variant {s.feast.variant!r} in {where} has no feature_repo/feature_store.<variant>.yaml"
        )
    if s.airflow.first_night and not _is_date(s.airflow.first_night):
        raise ConfigError(f"airflow.first_night must be a date, YYYY-MM-DD (got {s.airflow.first_night!r}) in {where}")
    if s.airflow.dbt_pool_slots < 1:
        raise ConfigError(f"airflow.dbt_pool_slots must be >= 1 (got {s.airflow.dbt_pool_slots}) in {where}")
    if min(s.airflow.task_retries, s.airflow.retry_delay_seconds) < 0:
        raise ConfigError(
            f"airflow.task_retries and airflow.retry_delay_seconds must be >= 0 (got {s.airflow.task_retries}, "
            f"{s.airflow.retry_delay_seconds}) in {where}"
        )
    if min(s.feast.materialize_chunk_days, s.feast.fetch_batch_rows) < 1:
        raise ConfigError(f"feast.materialize_chunk_days and feast.fetch_batch_rows must be >= 1 in {where}")
    t = s.training
    if t.device not in {"auto", "cpu", "cuda"}:
        raise ConfigError(f"training.device must be auto, cpu or cuda (got {t.device!r}) in {where}")
    if min(t.eval_days, t.ranker_days, t.epochs, t.batch_size, t.dim, t.hidden, t.feature_chunk_days, t.processes) < 1:
        raise ConfigError(
            "training: eval_days, ranker_days, epochs, batch_size, dim, hidden, feature_chunk_days and processes must "
            f"be >= 1 in {where}"
        )
    unknown_models = set(t.models) - set(MODEL_KINDS)
    if unknown_models:
        raise ConfigError(f"training.models: unknown {sorted(unknown_models)} in {where}; known: {list(MODEL_KINDS)}")
    r = s.ranker
    unknown_sources = set(r.sources) - set(CANDIDATE_SOURCES)
    if unknown_sources or not r.sources:
        raise ConfigError(
            f"ranker.sources: unknown {sorted(unknown_sources)} in {where}; known: {list(CANDIDATE_SOURCES)}"
        )
    if "popular_30d" not in r.sources:
        raise ConfigError(f"ranker.sources must include popular_30d (the fill of every list and baseline) in {where}")
    if min(r.candidates_per_source, r.horizon_days, r.anchor_every_days, r.max_anchors, r.rounds) < 1:
        raise ConfigError(
            f"ranker: candidates_per_source, horizon_days, anchor_every_days, max_anchors and rounds must be >= 1 in "
            f"{where}"
        )
    if r.min_history_days < 1 or r.refresh_every_days < 1 or r.num_leaves < 2 or r.min_data_in_leaf < 1:
        raise ConfigError(
            f"ranker: min_history_days, refresh_every_days, min_data_in_leaf must be >= 1, num_leaves >= 2 in {where}"
        )
    if r.objective not in {"lambdarank", "rank_xendcg", "binary"}:
        raise ConfigError(
            f"ranker.objective must be lambdarank, rank_xendcg or binary (got {r.objective!r}) in {where}"
        )
    if min(s.topk.k, s.topk.users_per_batch) < 1 or s.topk.keep_versions < 1:
        raise ConfigError(f"topk: k, users_per_batch and keep_versions must be >= 1 in {where}")
    if s.topk.model not in {"ranker", *MODEL_KINDS}:
        raise ConfigError(f"topk.model must be ranker or one of {list(MODEL_KINDS)} (got {s.topk.model!r}) in {where}")
    g = s.segments
    if not encoder_objectives(g.objective):
        raise ConfigError(
            f"segments.objective must be {', '.join(ENCODER_OBJECTIVES)} or both, or several joined by '+' "
            f"(got {g.objective!r}) in {where}"
        )
    if min(g.learning_rate, g.fine_tune_learning_rate) <= 0:
        raise ConfigError(f"segments: learning_rate and fine_tune_learning_rate must be > 0 in {where}")
    if min(g.epochs, g.dim, g.layers, g.profile_items, g.min_item_users, g.kmeans_starts) < 1 or g.k < 0:
        raise ConfigError(
            f"segments: epochs, dim, layers, profile_items, min_item_users, kmeans_starts >= 1, k >= 0 in {where}"
        )
    if g.k == 1 or not 2 <= g.k_min <= g.k_max:
        raise ConfigError(
            f"segments: k must be 0 (choose) or >= 2, and 2 <= k_min <= k_max (got k={g.k}, k_min={g.k_min}, "
            f"k_max={g.k_max}) in {where}"
        )
    for spec in s.alerts.notifiers:
        scheme, _, target = spec.partition(":")
        if scheme not in {"file", "webhook", "python"} or not target:
            raise ConfigError(
                f"alerts.notifiers: {spec!r} is not file:<path>, webhook:<url> or python:<module>:<function> in {where}"
            )
        if scheme == "webhook" and not target.startswith(("http://", "https://")):
            raise ConfigError(f"alerts.notifiers: {spec!r}: a webhook needs an http(s) URL in {where}")
    if s.alerts.webhook_timeout_seconds <= 0:
        raise ConfigError(f"alerts.webhook_timeout_seconds must be > 0 in {where}")
    if s.retention.days != 0 and s.retention.days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"retention.days must be 0 (keep everything) or at least {MIN_RETENTION_DAYS} (got {s.retention.days}) "
            f"in {where}: a night reads the segments of two nights before and continues from the newest versions"
        )
    if s.dbt_target not in {"duckdb", "spark", "spark_thrift"}:
        raise ConfigError(f"dbt_target must be duckdb, spark or spark_thrift (got {s.dbt_target!r}) in {where}")
    if not (SOURCES_DIR / f"{s.source}.yaml").is_file():
        known = sorted(p.stem for p in SOURCES_DIR.glob("*.yaml"))
        raise ConfigError(f"Unknown source '{s.source}' (no {SOURCES_DIR / (s.source + '.yaml')}); known: {known}")

import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from nightrec.config import PROJECT_ROOT, encoder_objectives, load_settings
from nightrec.errors import ConfigError


def test_local_profile_defaults_are_embedded():
    s = load_settings("local", env={})
    assert s.profile == "local"
    assert s.warehouse_root == PROJECT_ROOT / "warehouse"
    assert s.spark.master == "local[*]"
    assert s.source == "tmall_brand"
    assert s.dbt_target == "duckdb"
    assert s.pipeline.lookback_days == 2
    assert s.spark.all_conf()["spark.sql.session.timeZone"] == "UTC"


def test_cluster_profile_changes_only_configuration():
    s = load_settings("cluster", env={})
    assert s.spark.master.startswith("spark://")
    assert s.dbt_target == "spark"
    assert s.airflow.executor == "LocalExecutor" and s.airflow.sql_alchemy_conn == ""  # the URL holds a password
    assert s.spark.all_conf()["spark.executor.memory"] == "8g"


def test_java_options_go_to_the_driver_and_the_executors_and_an_explicit_conf_entry_wins():
    assert not {"spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"} & set(
        load_settings("local", env={}).spark.all_conf()
    )  # the JVM's defaults unless asked
    options = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # an '=' inside the value, set from the environment
    s = load_settings("local", env={"NIGHTREC_SET": f"spark.java_options={options}; spark.shuffle_partitions=3"})
    conf = s.spark.all_conf()
    assert conf["spark.driver.extraJavaOptions"] == conf["spark.executor.extraJavaOptions"] == options
    assert conf["spark.sql.shuffle.partitions"] == "3"
    mine = replace(s.spark, conf={"spark.executor.extraJavaOptions": "-Xss4m"}).all_conf()
    assert mine["spark.executor.extraJavaOptions"] == "-Xss4m" and mine["spark.driver.extraJavaOptions"] == options


def test_the_metadata_database_url_comes_from_the_environment_and_no_profile_holds_a_password(tmp_path: Path):
    from nightrec_app.airflow_env import airflow_environment

    url = "postgresql+psycopg://airflow:s3cret@db.internal:5432/airflow"
    s = load_settings("cluster", env={})
    env = airflow_environment(s, base={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url})
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url and env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # Airflow 3 would open it asynchronously with asyncpg, which the lock does not hold: psycopg 3 serves both
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == url.replace("+psycopg:", "+psycopg_async:")
    local = airflow_environment(load_settings("local", env={"NIGHTREC_AIRFLOW_HOME": str(tmp_path)}), base={})
    assert local["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow.db"
    assert "AIRFLOW__CORE__EXECUTOR" not in local and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in local
    for profile in (PROJECT_ROOT / "conf" / "profiles").glob("*.yaml"):
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", profile.read_text()), f"{profile.name} holds credentials"


def test_environment_overrides_single_values(tmp_path: Path):
    env = {
        "NIGHTREC_PROFILE": "local",
        "NIGHTREC_WAREHOUSE_ROOT": str(tmp_path),
        "NIGHTREC_SPARK_MASTER": "spark://elsewhere:7077",
        "NIGHTREC_SOURCE": "hm",
        "NIGHTREC_RUN_DATE": "2020-09-22",
    }
    s = load_settings(env=env)
    assert s.warehouse_root == tmp_path
    assert s.spark.master == "spark://elsewhere:7077"
    assert s.source == "hm"
    assert str(s.run_date) == "2020-09-22"


def test_unknown_profile_names_the_path_and_known_profiles():
    with pytest.raises(
        ConfigError,
        match=r"Could not find profile 'nope' at .*nope\.yaml; known profiles: \['cluster', 'local', 'smoke'\]",
    ):
        load_settings("nope", env={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NIGHTREC_RUN_DATE": "yesterday"}, "run_date must be YYYY-MM-DD"),
        ({"NIGHTREC_SOURCE": "retailrocket"}, "Unknown source 'retailrocket'"),
    ],
)
def test_invalid_values_raise_config_error(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings("local", env=env)


def test_unknown_keys_in_a_profile_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import nightrec.config as config

    (tmp_path / "odd.yaml").write_text("spark:\n  masterr: local[2]\n")
    monkeypatch.setattr(config, "PROFILES_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['masterr'\] under 'spark'"):
        config.load_settings("odd", env={})


def test_training_settings_load_and_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import nightrec.config as config

    smoke = config.load_settings("smoke", env={})
    assert smoke.training.models == ("two_tower", "gnolr") and smoke.training.epochs == 1
    local = config.load_settings("local", env={})
    # the nightly trains what the published lists use; the ordinal baselines are for the benchmark
    assert local.training.models == ("two_tower", "gnolr") and local.topk.model == "ranker"
    monkeypatch.setattr(config, "PROFILES_DIR", tmp_path)
    (tmp_path / "gpu.yaml").write_text("training:\n  device: tpu\n")
    with pytest.raises(ConfigError, match=r"training.device must be auto, cpu or cuda \(got 'tpu'\)"):
        config.load_settings("gpu", env={})
    (tmp_path / "models.yaml").write_text("training:\n  models: [gnolr, xgboost]\n")
    with pytest.raises(ConfigError, match=r"training.models: unknown \['xgboost'\]"):
        config.load_settings("models", env={})


def test_ranker_settings_load_and_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import nightrec.config as config

    monkeypatch.setattr(config, "PROFILES_DIR", tmp_path)
    (tmp_path / "r.yaml").write_text("ranker:\n  sources: [history, popular_30d]\n  label_gain: [0, 1, 1, 1, 8]\n")
    loaded = config.load_settings("r", env={}).ranker
    assert loaded.sources == ("history", "popular_30d") and loaded.label_gain == (0, 1, 1, 1, 8)
    for body, message in [
        ("ranker:\n  sources: [history, wishlist]\n", r"ranker.sources: unknown \['wishlist'\]"),
        ("ranker:\n  sources: [history]\n", "must include popular_30d"),
        ("ranker:\n  objective: xgboost\n", "ranker.objective must be lambdarank, rank_xendcg or binary"),
        ("ranker:\n  horizon_days: 0\n", "horizon_days"),
        ("topk:\n  model: wishlist\n", "topk.model must be ranker or one of"),
    ]:
        (tmp_path / "bad.yaml").write_text(body)
        with pytest.raises(ConfigError, match=message):
            config.load_settings("bad", env={})


def test_any_setting_can_be_set_from_the_environment_and_travels_to_child_processes():
    env = {"NIGHTREC_SET": "training.eval_days=7; ranker.sources=history,popular_30d\ntraining.refit=yes;"}
    s = load_settings("smoke", env=env | {"NIGHTREC_SET": env["NIGHTREC_SET"] + "; training.eval_days=9"})
    assert (s.training.eval_days, s.ranker.sources, s.training.refit) == (9, ("history", "popular_30d"), True)
    assert s.training.ranker_days == load_settings("smoke", env={}).training.ranker_days  # the rest: the profile's
    again = load_settings(env=s.environment())  # what Airflow's tasks and spark-submit load
    assert again == s


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("training.eval_days", "is not section.key=value"),
        ("warehouse.root=/x", "unknown section 'warehouse'"),
        ("training.nope=1", "unknown key 'nope' of 'training'"),
        ("training.refit=maybe", "training.refit='maybe' is not a valid bool"),
        ("training.eval_days=seven", "training.eval_days='seven' is not a valid int"),
        ("spark.conf=a", "a mapping cannot be set this way"),
        ("training.eval_days=0", "with NIGHTREC_SET='training.eval_days=0'"),  # the usual validation, naming the entry
        ("segments.kmeans_starts=0", "kmeans_starts >= 1"),
        ("segments.objective=both+next", "segments.objective must be masked, contrastive, future or both"),
    ],
)
def test_a_bad_setting_from_the_environment_is_refused(entry: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings("smoke", env={"NIGHTREC_SET": entry})


def test_encoder_objectives_sum_with_a_plus_and_both_names_the_first_two():
    s = load_settings("smoke", env={"NIGHTREC_SET": "segments.objective=both+future"})
    assert encoder_objectives(s.segments.objective) == {"masked", "contrastive", "future"}
    assert encoder_objectives("future") == {"future"} and encoder_objectives("both") == {"masked", "contrastive"}
    assert encoder_objectives("masked+") == frozenset() and encoder_objectives("") == frozenset()


def test_the_cli_set_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch):
    from nightrec_app import cli

    monkeypatch.setenv("NIGHTREC_SET", "training.eval_days=7")
    args = cli.build_parser().parse_args(["status", "--set", "training.eval_days=5", "--set", "ranker.max_anchors=2"])
    s = cli._settings(args)
    assert (s.training.eval_days, s.ranker.max_anchors) == (5, 2)
    assert s.environment()["NIGHTREC_SET"] == "training.eval_days=7; training.eval_days=5; ranker.max_anchors=2"


def test_the_airflow_section_is_set_like_any_other_and_its_pool_validated():
    s = load_settings("local", env={"NIGHTREC_SET": "airflow.catchup=false; airflow.dbt_pool_slots=2"})
    assert s.airflow.catchup is False and s.airflow.dbt_pool_slots == 2 and s.airflow.dbt_pool == "nightrec_dbt"
    assert load_settings("local", env={}).airflow.catchup is True
    with pytest.raises(ConfigError, match=r"airflow\.dbt_pool_slots must be >= 1"):
        load_settings("local", env={"NIGHTREC_SET": "airflow.dbt_pool_slots=0"})


def test_the_nightly_dags_first_night_is_the_sources_nightly_start_unless_set_within_its_history():
    from nightrec.adapters import load_adapter

    tmall = load_adapter("tmall_brand")
    assert tmall.first_night(load_settings("local", env={}).airflow.first_night) == date(2014, 8, 14)  # nightly_start
    later = load_settings("local", env={"NIGHTREC_SET": "airflow.first_night=2014-08-15"}).airflow.first_night
    assert tmall.first_night(later) == date(2014, 8, 15)
    with pytest.raises(ConfigError, match=r"airflow\.first_night must be a date"):
        load_settings("local", env={"NIGHTREC_SET": "airflow.first_night=15/08/2014"})
    for outside in ("2014-08-13", "2014-08-16"):  # the bootstrap's days; past the history
        with pytest.raises(ConfigError, match=r"must lie between tmall_brand's nightly_start \(2014-08-14\)"):
            tmall.first_night(outside)


def test_the_retry_delay_is_a_setting_that_reaches_every_tasks_default_args():
    from datetime import timedelta

    from nightrec_app.orchestration import task_defaults

    assert task_defaults(load_settings("local", env={}))["retry_delay"] == timedelta(minutes=2)
    s = load_settings("local", env={"NIGHTREC_SET": "airflow.task_retries=1; airflow.retry_delay_seconds=5"})
    assert (task_defaults(s)["retries"], task_defaults(s)["retry_delay"]) == (1, timedelta(seconds=5))
    with pytest.raises(ConfigError, match=r"airflow\.task_retries and airflow\.retry_delay_seconds must be >= 0"):
        load_settings("local", env={"NIGHTREC_SET": "airflow.retry_delay_seconds=-1"})


def test_the_feature_fetch_batch_is_a_setting_and_must_be_positive():
    assert load_settings("local", env={}).feast.fetch_batch_rows == 20_000
    s = load_settings("local", env={"NIGHTREC_SET": "feast.fetch_batch_rows=500"})
    assert s.feast.fetch_batch_rows == 500
    with pytest.raises(ConfigError, match=r"feast\.materialize_chunk_days and feast\.fetch_batch_rows must be >= 1"):
        load_settings("local", env={"NIGHTREC_SET": "feast.fetch_batch_rows=0"})


def test_the_duckdb_memory_limit_loads_travels_and_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import nightrec.config as config

    local = config.load_settings("local", env={})
    assert local.duckdb_memory_limit == "6GB"
    assert local.environment()["NIGHTREC_DUCKDB_MEMORY_LIMIT"] == "6GB"  # what dbt's profiles.yml reads
    monkeypatch.setattr(config, "PROFILES_DIR", tmp_path)
    (tmp_path / "big.yaml").write_text("duckdb_memory_limit: 12GiB\n")
    assert config.load_settings("big", env={}).duckdb_memory_limit == "12GiB"
    (tmp_path / "odd.yaml").write_text("duckdb_memory_limit: lots\n")
    with pytest.raises(ConfigError, match=r"duckdb_memory_limit must be a size such as 6GB or 512MiB \(got 'lots'\)"):
        config.load_settings("odd", env={})

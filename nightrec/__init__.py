"""nightrec: the nightly recommendation warehouse (core package).

The core holds what every other folder shares: typed configuration, the canonical event contract, source
adapters, the warehouse layout, landing (the replayer), storage, quality, Feast, the dbt runner, run manifests, the
report and the ranking kernel. It imports none of spark_jobs/, training/, dags/ or the entry points (nightrec_app/),
and starts no engine (PyTorch, Spark, Airflow): the contracts in pyproject.toml, checked by `make lint`.
"""

__version__ = "0.1.0"

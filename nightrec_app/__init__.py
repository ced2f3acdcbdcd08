"""nightrec_app: the entry points of the warehouse.

The `nightrec` command line (cli.py), the Python callables the Airflow tasks run (tasks.py), the task wiring the
DAG files call (orchestration.py) and the environment Airflow and spark-submit run in (airflow_env.py). They put
the core (`nightrec`), the Spark jobs (`spark_jobs`) and training (`training`) together; nothing below imports
them back (the import contracts in pyproject.toml, checked by `make lint`).
"""

"""nightrec: the nightly recommendation warehouse (core package).

The core holds what every other folder shares: typed configuration, the canonical event contract,
source adapters, landing (the replayer), storage helpers and the CLI. It imports none of dags/,
spark_jobs/, dbt/, feature_repo/ or training/.
"""

__version__ = "0.1.0"

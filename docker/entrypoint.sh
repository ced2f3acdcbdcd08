#!/usr/bin/env bash
# The containers' entry point (docker/Dockerfile, docker/Dockerfile.training).
#   spark-master | spark-worker   a Spark standalone master / worker, from the pyspark installation
#   airflow <command...>          Airflow in the project's environment (`nightrec airflow`: dags folder, metadata
#                                 database, the Spark connection, the profile's settings for the tasks)
#   anything else                 a nightrec command (`nightrec --help`)
set -euo pipefail

# Spark's driver (inside the Airflow task) and executors reach each other by this container's address, not loopback.
SPARK_LOCAL_IP="$(hostname -i | awk '{print $1}')"
export SPARK_LOCAL_IP
SPARK_HOME="$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME

case "${1:-}" in
  spark-master)
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host 0.0.0.0 --port 7077 --webui-port 8081
    ;;
  spark-worker)
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      --webui-port 8082 "${NIGHTREC_SPARK_MASTER:?the master, e.g. spark://spark-master:7077}"
    ;;
  airflow)
    shift
    exec nightrec airflow "$@"
    ;;
  *)
    exec nightrec "$@"
    ;;
esac

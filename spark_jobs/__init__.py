"""PySpark jobs, one module per job; each has ``main(argv)`` for spark-submit and ``run(spark, ...)`` for tests."""

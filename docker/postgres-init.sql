-- The second database on the compose file's Postgres: Feast's SQL registry (the first, airflow, is POSTGRES_DB).
CREATE DATABASE feast;

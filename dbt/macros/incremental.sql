{#- Incremental by ds on both targets: delete+insert on DuckDB, insert_overwrite of ds partitions on Spark. A column
    added to a model is appended to the existing table (earlier days stay null until `dbt build --full-refresh`). -#}
{% macro incremental_by_ds() -%}
    {%- if target.type == 'spark' -%}
        {{ return({'materialized': 'incremental', 'incremental_strategy': 'insert_overwrite', 'partition_by': ['ds'], 'file_format': 'parquet', 'on_schema_change': 'append_new_columns'}) }}
    {%- else -%}
        {{ return({'materialized': 'incremental', 'incremental_strategy': 'delete+insert', 'unique_key': 'ds', 'on_schema_change': 'append_new_columns'}) }}
    {%- endif -%}
{%- endmacro %}

{#- Incremental by ds on both targets: delete+insert on DuckDB, insert_overwrite of ds partitions on Spark. -#}
{% macro incremental_by_ds() -%}
    {%- if target.type == 'spark' -%}
        {{ return({'materialized': 'incremental', 'incremental_strategy': 'insert_overwrite', 'partition_by': ['ds'], 'file_format': 'parquet'}) }}
    {%- else -%}
        {{ return({'materialized': 'incremental', 'incremental_strategy': 'delete+insert', 'unique_key': 'ds'}) }}
    {%- endif -%}
{%- endmacro %}

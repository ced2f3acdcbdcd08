{#- A Parquet table of the warehouse zones (bronze/silver), partitioned by ds, as a relation both engines read. -#}
{% macro read_zone(path) %}{{ return(adapter.dispatch('read_zone', 'nightrec')(path)) }}{% endmacro %}

{% macro duckdb__read_zone(path) -%}
    read_parquet('{{ var("warehouse_root") }}/{{ path }}/ds=*/*.parquet', hive_partitioning = true, hive_types = {'ds': date})
{%- endmacro %}

{% macro spark__read_zone(path) -%}
    parquet.`{{ var("warehouse_root") }}/{{ path }}`
{%- endmacro %}

{#- A Parquet table of the warehouse zones (bronze/silver), partitioned by ds, as a relation both engines read. -#}
{% macro read_zone(path) %}{{ return(adapter.dispatch('read_zone', 'nightrec')(path)) }}{% endmacro %}

{% macro duckdb__read_zone(path) -%}
    read_parquet('{{ var("warehouse_root") }}/{{ path }}/ds=*/*.parquet', hive_partitioning = true, hive_types = {'ds': date})
{%- endmacro %}

{% macro spark__read_zone(path) -%}
    parquet.`{{ var("warehouse_root") }}/{{ path }}`
{%- endmacro %}

{#- A snapshot table of the warehouse (bronze/item_attributes ...): one directory of Parquet files, no partitions. -#}
{% macro read_snapshot(path) %}{{ return(adapter.dispatch('read_snapshot', 'nightrec')(path)) }}{% endmacro %}

{% macro duckdb__read_snapshot(path) -%}
    read_parquet('{{ var("warehouse_root") }}/{{ path }}/*.parquet')
{%- endmacro %}

{% macro spark__read_snapshot(path) -%}
    parquet.`{{ var("warehouse_root") }}/{{ path }}`
{%- endmacro %}

{#- The project's zones (models/staging/_sources.yml) are Parquet directories under the warehouse root. The builtin
    call records the lineage (the docs start at the zones); when models run, a source becomes the engine's read of its
    path: read_zone for a table partitioned by ds, read_snapshot for one rewritten whole. -#}
{% macro source(source_name, table_name) %}
    {%- set relation = builtins.source(source_name, table_name) -%}
    {%- if not execute -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set meta = graph.sources['source.nightrec.' ~ source_name ~ '.' ~ table_name].config.meta -%}
    {%- if meta.layout == 'snapshot' -%}
        {{ return(read_snapshot(meta.path)) }}
    {%- endif -%}
    {{ return(read_zone(meta.path)) }}
{% endmacro %}

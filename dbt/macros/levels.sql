{#- One column per behaviour level 1..max_level: the count of rows at level k, as <prefix>_<k> (bigint). -#}
{% macro count_per_level(level_col, prefix, value='1') -%}
    {%- for lv in range(1, (var('max_level') | int) + 1) %}
    cast(sum(case when {{ level_col }} = {{ lv }} then {{ value }} else 0 end) as bigint) as {{ prefix }}_{{ lv }}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- A safe ratio as double (NULL when the denominator is 0). -#}
{% macro ratio(numerator, denominator) -%}
    cast({{ numerator }} as double) / nullif({{ denominator }}, 0)
{%- endmacro %}

{#- Rows of the half-open day range this run rebuilds (incremental models). -#}
{% macro in_run_range(ds_col='ds') -%}
    {{ ds_col }} >= cast('{{ var("start_ds") }}' as date) and {{ ds_col }} < cast('{{ var("end_ds") }}' as date)
{%- endmacro %}

{#- The feature timestamp of values computed from behaviour through day ds: ds + 1 day, 00:00 UTC (no leakage). -#}
{% macro known_at(ds_col='ds') -%}
    cast({{ dbt.dateadd('day', 1, ds_col) }} as timestamp)
{%- endmacro %}

{#- The median of a numeric column as double (both engines interpolate between the two middle values). -#}
{% macro median(column) -%}
    cast(median({{ column }}) as double)
{%- endmacro %}

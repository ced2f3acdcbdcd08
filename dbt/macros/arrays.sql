{#- Replace NULL elements of an array column by `value` (list features must not hold nulls for Feast). -#}
{% macro array_fill_nulls(column, value) %}{{ return(adapter.dispatch('array_fill_nulls', 'nightrec')(column, value)) }}{% endmacro %}

{% macro duckdb__array_fill_nulls(column, value) -%}
    list_transform({{ column }}, lambda x: coalesce(x, {{ value }}))
{%- endmacro %}

{% macro spark__array_fill_nulls(column, value) -%}
    transform({{ column }}, x -> coalesce(x, {{ value }}))
{%- endmacro %}

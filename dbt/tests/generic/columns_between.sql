{#- Every column whose name starts with `prefix` lies in [min_value, max_value] (nulls allowed). The columns are
    looked up in the built relation, so a source with fewer levels (fewer rate_/conversion_ columns) is covered too. -#}
{% test columns_between(model, prefix, min_value, max_value) %}
{%- set columns = [] -%}
{%- if execute -%}
    {%- for column in adapter.get_columns_in_relation(model) -%}
        {%- if column.name.lower().startswith(prefix) -%}{%- do columns.append(column.name) -%}{%- endif -%}
    {%- endfor -%}
{%- endif %}
{%- if columns | length == 0 %}
select 1 as no_matching_column where 1 = 0
{%- else %}
select *
from {{ model }}
where
    {%- for column in columns %}
    {{ 'or ' if not loop.first }}{{ column }} < {{ min_value }} or {{ column }} > {{ max_value }}
    {%- endfor %}
{%- endif %}
{% endtest %}

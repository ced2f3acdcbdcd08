{#- The as-of days a run computes features for: every day with activity, limited to [start_ds, end_ds) when the
    model builds incrementally. Use as the body of a `calendar` CTE. -#}
{% macro run_calendar(relation) -%}
    select distinct ds from {{ relation }}
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}
{%- endmacro %}

{#- Pair each calendar day D with the rows of `relation` from the trailing window (D - days, D]. -#}
{% macro trailing_window_join(relation, days=90) -%}
    from calendar
    inner join {{ relation }}
        on {{ relation }}.ds <= calendar.ds
        and {{ relation }}.ds > {{ dbt.dateadd('day', -days, 'calendar.ds') }}
{%- endmacro %}

{#- The day (exclusive) a row stops counting in a window of `days`: `days` after `from_col`, or the pair's next
    day of the same kind (`next_col`) when that comes sooner (item_features' running sums, decision 38). -#}
{% macro window_exit(next_col, days, from_col='ds') -%}
    least(coalesce({{ next_col }}, {{ dbt.dateadd('day', days, from_col) }}), {{ dbt.dateadd('day', days, from_col) }})
{%- endmacro %}

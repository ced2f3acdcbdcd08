{{ config(**incremental_by_ds()) }}

{#- One row per (item, day D) for items with events in the 90 days up to D; known at D+1 00:00 (feature_ts).
    Conversion from level k to k+1 over 30 days: users who reached at least k+1 / users who reached at least k. -#}

{%- set windows = [7, 30, 90] %}

with

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

calendar as (

    {{ run_calendar('user_item_days') }}

),

activity_in_window as (

    select
        calendar.ds,
        user_item_days.item_id,
        user_item_days.user_id,
        {{ dbt.datediff('user_item_days.ds', 'calendar.ds', 'day') }} as age_days,
        user_item_days.n_events,
        user_item_days.max_level

    {{ trailing_window_join('user_item_days', 90) }}

),

popularity as (

    select
        item_id,
        ds,
        {%- for w in windows %}
        cast(sum(case when age_days < {{ w }} then n_events else 0 end) as bigint) as n_events_{{ w }}d,
        count(distinct case when age_days < {{ w }} then user_id end) as n_users_{{ w }}d,
        {%- endfor %}
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        count(distinct case when age_days < 30 and max_level >= {{ lv }} then user_id end)
            as n_users_reaching_level_{{ lv }}_30d{{ "," if not loop.last }}
        {%- endfor %}

    from activity_in_window
    group by item_id, ds

),

final as (

    select
        ---------- keys
        item_id,

        ---------- popularity
        {%- for w in windows %}
        n_events_{{ w }}d,
        n_users_{{ w }}d,
        {%- endfor %}

        ---------- funnel
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        n_users_reaching_level_{{ lv }}_30d,
        {%- endfor %}
        {%- for lv in range(1, var('max_level') | int) %}
        {{ ratio('n_users_reaching_level_' ~ (lv + 1) ~ '_30d', 'n_users_reaching_level_' ~ lv ~ '_30d') }}
            as conversion_level_{{ lv }}_to_{{ lv + 1 }}_30d,
        {%- endfor %}

        ---------- time
        {{ known_at('ds') }} as feature_ts,
        ds

    from popularity

)

select * from final

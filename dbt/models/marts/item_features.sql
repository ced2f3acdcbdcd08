{{ config(**incremental_by_ds()) }}

{#- One row per (item, day D) for items with events in the 90 days up to D; known at D+1 00:00 (feature_ts).
    Conversion from level k to k+1 over 30 days: users who reached at least k+1 / users who reached at least k.
    Buyers are users who reached the source's highest level. Repurchase over the 365 days up to D: the share of the
    item's buyers who bought it on two or more days, and the median days between one buyer's consecutive purchase
    days of it (a rebuy cycle; the earlier purchase may lie before the window). -#}

{%- set windows = [7, 30, 90] %}
{%- set top_level = var('max_level') | int %}

with

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

calendar as (

    {{ run_calendar('user_item_days') }}

),

purchase_days as (

    select
        user_id,
        item_id,
        ds,
        {{ dbt.datediff('lag(ds) over (partition by user_id, item_id order by ds)', 'ds', 'day') }} as days_since_previous
    from user_item_days
    where max_level = {{ top_level }}

),

purchases_in_window as (

    select
        calendar.ds,
        purchase_days.item_id,
        purchase_days.user_id,
        purchase_days.days_since_previous

    {{ trailing_window_join('purchase_days', 365) }}

),

buyer_purchase_days as (

    select ds, item_id, user_id, count(*) as n_purchase_days
    from purchases_in_window
    group by ds, item_id, user_id

),

repurchase as (

    select
        ds,
        item_id,
        count(*) as n_buyers_365d,
        sum(case when n_purchase_days >= 2 then 1 else 0 end) as n_rebuyers_365d
    from buyer_purchase_days
    group by ds, item_id

),

rebuy_cycle as (

    select
        ds,
        item_id,
        {{ median('days_since_previous') }} as median_days_between_purchases_365d
    from purchases_in_window
    where days_since_previous is not null
    group by ds, item_id

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

-- Two stages: first what each user did with the item in D's windows, then count users per (item, D). One
-- aggregation with a count(distinct ...) per window and level makes Spark copy every row once per distinct
-- expression (its Expand step: ten copies here); per-user rows count the same users without it.
user_activity as (

    select
        item_id,
        ds,
        user_id,
        min(age_days) as min_age_days,
        min(case when max_level = {{ top_level }} then age_days end) as min_purchase_age_days,
        max(case when age_days < 30 then max_level end) as max_level_30d,
        {%- for w in windows %}
        sum(case when age_days < {{ w }} then n_events else 0 end) as n_events_{{ w }}d{{ "," if not loop.last }}
        {%- endfor %}

    from activity_in_window
    group by item_id, ds, user_id

),

popularity as (

    select
        item_id,
        ds,
        {%- for w in windows %}
        cast(sum(n_events_{{ w }}d) as bigint) as n_events_{{ w }}d,
        cast(sum(case when min_age_days < {{ w }} then 1 else 0 end) as bigint) as n_users_{{ w }}d,
        cast(sum(case when min_purchase_age_days < {{ w }} then 1 else 0 end) as bigint) as n_buyers_{{ w }}d,
        {%- endfor %}
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        cast(sum(case when max_level_30d >= {{ lv }} then 1 else 0 end) as bigint)
            as n_users_reaching_level_{{ lv }}_30d{{ "," if not loop.last }}
        {%- endfor %}

    from user_activity
    group by item_id, ds

),

final as (

    select
        ---------- keys
        popularity.item_id,

        ---------- popularity
        {%- for w in windows %}
        popularity.n_events_{{ w }}d,
        popularity.n_users_{{ w }}d,
        popularity.n_buyers_{{ w }}d,
        {%- endfor %}
        -- users over the last 7 days against the 30-day weekly average: above 1 the item is rising
        {{ ratio('popularity.n_users_7d * 30', 'popularity.n_users_30d * 7') }} as trend_7d_30d,

        ---------- repurchase
        coalesce(repurchase.n_buyers_365d, 0) as n_buyers_365d,
        {{ ratio('repurchase.n_rebuyers_365d', 'repurchase.n_buyers_365d') }} as repurchase_rate_365d,
        rebuy_cycle.median_days_between_purchases_365d,

        ---------- funnel
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        popularity.n_users_reaching_level_{{ lv }}_30d,
        {%- endfor %}
        {%- for lv in range(1, var('max_level') | int) %}
        {{ ratio('popularity.n_users_reaching_level_' ~ (lv + 1) ~ '_30d', 'popularity.n_users_reaching_level_' ~ lv ~ '_30d') }}
            as conversion_level_{{ lv }}_to_{{ lv + 1 }}_30d,
        {%- endfor %}

        ---------- time
        {{ known_at('popularity.ds') }} as feature_ts,
        popularity.ds

    from popularity
    left join repurchase
        on popularity.item_id = repurchase.item_id
        and popularity.ds = repurchase.ds
    left join rebuy_cycle
        on popularity.item_id = rebuy_cycle.item_id
        and popularity.ds = rebuy_cycle.ds

)

select * from final

{{ config(**incremental_by_ds()) }}

{#- One row per (user, day D) for users active in the 90 days up to D: behaviour through the end of D, so the
    row is known at D+1 00:00 (feature_ts; docs/architecture.md, "Feature time, no leakage"). Breadth and repurchase over 90
    days: distinct items touched and bought, and the share of bought items bought on two or more days. -#}

{%- set windows = [7, 30, 90] %}
{%- set top_level = var('max_level') | int %}

with

user_days as (

    select * from {{ ref('int_events__user_days') }}

),

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

item_categories as (

    select item_id, category
    from {{ ref('stg_bronze__item_attributes') }}
    where category is not null

),

calendar as (

    {{ run_calendar('user_days') }}

),

activity_in_window as (

    select
        calendar.ds,
        user_days.user_id,
        {{ dbt.datediff('user_days.ds', 'calendar.ds', 'day') }} as age_days,
        user_days.n_events,
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        user_days.n_level_{{ lv }},
        {%- endfor %}
        user_days.n_items

    {{ trailing_window_join('user_days', 90) }}

),

windowed_counts as (

    select
        user_id,
        ds,
        min(age_days) as recency_days,
        {%- for w in windows %}
        count(case when age_days < {{ w }} then 1 end) as active_days_{{ w }}d,
        cast(sum(case when age_days < {{ w }} then n_events else 0 end) as bigint) as n_events_{{ w }}d,
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        cast(sum(case when age_days < {{ w }} then n_level_{{ lv }} else 0 end) as bigint) as n_level_{{ lv }}_{{ w }}d,
        {%- endfor %}
        {%- endfor %}
        max(n_items) as max_items_per_day_90d

    from activity_in_window
    group by user_id, ds

),

item_counts_90d as (

    select
        calendar.ds,
        user_item_days.user_id,
        user_item_days.item_id,
        cast(sum(user_item_days.n_events) as bigint) as n_events,
        sum(case when user_item_days.max_level = {{ top_level }} then 1 else 0 end) as n_purchase_days

    {{ trailing_window_join('user_item_days', 90) }}
    group by calendar.ds, user_item_days.user_id, user_item_days.item_id

),

breadth_90d as (

    select
        ds,
        user_id,
        count(*) as n_items_90d,
        sum(case when n_purchase_days >= 1 then 1 else 0 end) as n_items_bought_90d,
        sum(case when n_purchase_days >= 2 then 1 else 0 end) as n_items_rebought_90d

    from item_counts_90d
    group by ds, user_id

),

ranked_items as (

    select
        ds,
        user_id,
        item_id,
        row_number() over (partition by user_id, ds order by n_events desc, item_id) as item_rank

    from item_counts_90d

),

top_item as (

    select ds, user_id, item_id as top_item_90d
    from ranked_items
    where item_rank = 1

),

category_counts_90d as (

    select
        item_counts_90d.ds,
        item_counts_90d.user_id,
        item_categories.category,
        cast(sum(item_counts_90d.n_events) as bigint) as n_events

    from item_counts_90d
    inner join item_categories on item_counts_90d.item_id = item_categories.item_id
    group by item_counts_90d.ds, item_counts_90d.user_id, item_categories.category

),

ranked_categories as (

    select
        ds,
        user_id,
        category,
        row_number() over (partition by user_id, ds order by n_events desc, category) as category_rank

    from category_counts_90d

),

top_category as (

    select ds, user_id, category as top_category_90d
    from ranked_categories
    where category_rank = 1

),

final as (

    select
        ---------- keys
        windowed_counts.user_id,

        ---------- recency and frequency
        windowed_counts.recency_days,
        {%- for w in windows %}
        windowed_counts.active_days_{{ w }}d,
        windowed_counts.n_events_{{ w }}d,
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        windowed_counts.n_level_{{ lv }}_{{ w }}d,
        {{ ratio('windowed_counts.n_level_' ~ lv ~ '_' ~ w ~ 'd', 'windowed_counts.n_events_' ~ w ~ 'd') }}
            as rate_level_{{ lv }}_{{ w }}d,
        {%- endfor %}
        {%- endfor %}

        ---------- breadth and repurchase
        breadth_90d.n_items_90d,
        breadth_90d.n_items_bought_90d,
        {{ ratio('breadth_90d.n_items_rebought_90d', 'breadth_90d.n_items_bought_90d') }} as repurchase_rate_90d,

        ---------- taste
        top_item.top_item_90d,
        top_category.top_category_90d,

        ---------- time
        {{ known_at('windowed_counts.ds') }} as feature_ts,
        windowed_counts.ds

    from windowed_counts
    inner join top_item
        on windowed_counts.user_id = top_item.user_id
        and windowed_counts.ds = top_item.ds
    inner join breadth_90d
        on windowed_counts.user_id = breadth_90d.user_id
        and windowed_counts.ds = breadth_90d.ds
    left join top_category
        on windowed_counts.user_id = top_category.user_id
        and windowed_counts.ds = top_category.ds

)

select * from final

with

user_days as (

    select * from {{ ref('int_events__user_days') }}

),

user_attributes as (

    select * from {{ ref('stg_bronze__user_attributes') }}

),

user_items as (

    select user_id, count(distinct item_id) as n_items
    from {{ ref('int_events__user_item_days') }}
    group by user_id

),

user_summary as (

    select
        user_id,
        min(ds) as first_event_ds,
        max(ds) as last_event_ds,
        count(*) as n_active_days,
        cast(sum(n_events) as bigint) as n_events,
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        cast(sum(n_level_{{ lv }}) as bigint) as n_level_{{ lv }},
        {%- endfor %}
        max(max_level) as max_level_reached

    from user_days
    group by user_id

),

final as (

    select
        user_summary.*,
        user_items.n_items,

        ---------- attributes (null where the source has no user file)
        user_attributes.age,
        user_attributes.membership

    from user_summary
    inner join user_items on user_summary.user_id = user_items.user_id
    left join user_attributes on user_summary.user_id = user_attributes.user_id

)

select * from final

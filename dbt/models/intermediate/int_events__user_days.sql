with

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

user_days as (

    select
        user_id,
        ds,
        cast(sum(n_events) as bigint) as n_events,
        count(*) as n_items,
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        cast(sum(n_level_{{ lv }}) as bigint) as n_level_{{ lv }},
        {%- endfor %}
        max(max_level) as max_level

    from user_item_days
    group by user_id, ds

)

select * from user_days

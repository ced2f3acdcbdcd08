{#- Every item seen in events. The bundled Tmall source has no item attributes (its items are brands). -#}

with

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

item_summary as (

    select
        item_id,
        min(ds) as first_event_ds,
        max(ds) as last_event_ds,
        count(distinct user_id) as n_users,
        cast(sum(n_events) as bigint) as n_events,
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        cast(sum(n_level_{{ lv }}) as bigint) as n_level_{{ lv }},
        {%- endfor %}
        max(max_level) as max_level_reached

    from user_item_days
    group by item_id

)

select * from item_summary

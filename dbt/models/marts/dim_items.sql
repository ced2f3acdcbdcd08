{#- Every item seen in events, with its attributes where the source has them (null otherwise: Tmall's items are
    brands without attributes, and H&M's article file covers part of the catalogue). -#}

with

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

item_attributes as (

    select * from {{ ref('stg_bronze__item_attributes') }}

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

),

final as (

    select
        item_summary.*,

        ---------- attributes
        item_attributes.item_name,
        item_attributes.category,
        item_attributes.subcategory,
        item_attributes.colour,
        item_attributes.tags

    from item_summary
    left join item_attributes on item_summary.item_id = item_attributes.item_id

)

select * from final

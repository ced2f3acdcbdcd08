with

events as (

    select * from {{ ref('stg_bronze__events') }}

),

user_item_days as (

    select
        user_id,
        item_id,
        ds,
        count(*) as n_events,
        {{ count_per_level('level', 'n_level') }},
        max(level) as max_level

    from events
    group by user_id, item_id, ds

)

select * from user_item_days

{{ config(**incremental_by_ds()) }}

with

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}

),

final as (

    select
        ---------- keys
        user_id,
        item_id,

        ---------- counts
        n_events,
        {%- for lv in range(1, (var('max_level') | int) + 1) %}
        n_level_{{ lv }},
        {%- endfor %}
        max_level as max_level_reached,

        ---------- day
        ds

    from user_item_days

)

select * from final

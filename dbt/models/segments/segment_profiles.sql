{{ config(**incremental_by_ds()) }}

{#- One row per segment and night: its size, behaviour beside everyone's, its most over-represented items (lift) and
    its automatic label. top_items is a list of (item_id, name, consumers, share, lift), highest lift first. -#}

with

profiles as (

    select * from {{ source('segments', 'profiles') }}
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}

),

final as (

    select
        ---------- keys
        segment_id,
        label,

        ---------- size
        consumers,
        share,

        ---------- behaviour
        mean_events,
        mean_active_days,
        top_level_share,
        recency_days,
        level_shares,

        ---------- what sets it apart
        top_items,

        ---------- time
        cast(ds as date) as ds

    from profiles

)

select * from final

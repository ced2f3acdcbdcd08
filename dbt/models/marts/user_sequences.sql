{{ config(**incremental_by_ds()) }}

{#- The silver sequence state of each user active on D, as a mart Feast serves (list features). Built from behaviour
    through the end of D, so known at D+1 00:00; a user's latest row stays their state until they act again. -#}

with

sequences as (

    select * from {{ source('silver', 'sequences') }}
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}

),

final as (

    select
        ---------- keys
        user_id,

        ---------- the last N behaviour tokens, oldest first
        seq_item_ids,
        seq_levels,
        -- -1 marks the user's first event ever (no previous event to measure a gap from)
        {{ array_fill_nulls('seq_gap_seconds', -1) }} as seq_gap_seconds,
        seq_length,

        ---------- cumulative activity
        events_total,
        active_days,
        max_level,
        last_event_ts,

        ---------- time
        {{ known_at('ds') }} as feature_ts,
        cast(ds as date) as ds

    from sequences

)

select * from final

{{ config(**incremental_by_ds()) }}

{#- Each consumer's segment on night D (spark_jobs/build_segments.py), with the segment's automatic label: the
    table analysts join to anything keyed by user_id. One row per (user, night); a segment id keeps its meaning from
    night to night (centroid matching). -#}

with

membership as (

    select * from {{ source('segments', 'membership') }}
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}

),

profiles as (

    select segment_id, label, ds from {{ source('segments', 'profiles') }}

),

final as (

    select
        ---------- keys
        membership.user_id,
        membership.segment_id,

        ---------- how the consumer sits in it
        profiles.label as segment_label,
        -- Euclidean distance of the consumer's embedding to the segment's centroid (small = typical member)
        membership.distance,

        ---------- time (the night's segments are known at the end of D, like every feature of D)
        {{ known_at('membership.ds') }} as feature_ts,
        cast(membership.ds as date) as ds

    from membership
    left join profiles
        on membership.segment_id = profiles.segment_id
        and membership.ds = profiles.ds

)

select * from final

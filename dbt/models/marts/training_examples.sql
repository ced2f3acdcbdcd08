{{ config(**incremental_by_ds()) }}

{#- An exposure: where the source has no impressions (Tmall, H&M), a (user, item, day) with any event, labelled
    with the highest level reached that day (docs/architecture.md, "Exposure and labels"). Negatives for retrieval are sampled
    at training time, not stored here. -#}

with

interactions as (

    select * from {{ ref('fct_interactions') }}
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}

),

examples as (

    select
        ---------- keys
        user_id,
        item_id,

        ---------- label
        max_level_reached as label,
        'any_event_on_day' as exposure_definition,

        ---------- time: the example is at D 00:00, so point-in-time joins give it features through D-1
        cast(ds as timestamp) as example_ts,
        ds

    from interactions

)

select * from examples

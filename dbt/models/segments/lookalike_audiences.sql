{{ config(**incremental_by_ds()) }}

{#- The saved lookalike audiences (conf/audiences/<source>.yaml) as rebuilt on night D: the seed's consumers
    (is_seed, no rank) and the consumers most like them (rank 1 = most alike), with the classifier's score. -#}

with

audiences as (

    select * from {{ source('segments', 'audiences') }}
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}

),

final as (

    select
        ---------- keys
        audience,
        user_id,

        ---------- membership
        is_seed,
        -- 1 = the consumer most like the seed; null for the seed's own members
        rank,
        -- the positive-unlabelled classifier's logit (higher = more like the seed)
        score,

        ---------- time
        cast(ds as date) as ds

    from audiences

)

select * from final

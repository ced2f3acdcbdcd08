{#- The published top-k (serving/topk/current, moved by an atomic pointer swap) with the items' attributes: what each
    user is shown, for analysts. Tagged `serving`: built after each publication, not in the nightly marts build. -#}

with

topk as (

    select * from {{ source('serving', 'topk_current') }}

),

items as (

    select * from {{ ref('dim_items') }}

),

final as (

    select
        ---------- ids
        topk.user_id,
        topk.rank,
        topk.item_id,

        ---------- scores
        topk.score,
        topk.source,
        topk.sources,
        topk.model_version,

        ---------- item attributes (null where the source has none)
        items.item_name,
        items.category,
        items.subcategory,
        items.colour,
        items.n_users as item_n_users,
        items.last_event_ds as item_last_event_ds

    from topk
    left join items on topk.item_id = items.item_id

)

select * from final

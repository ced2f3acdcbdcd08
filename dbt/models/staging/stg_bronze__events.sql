with

source as (

    select * from {{ source('bronze', 'events') }}

),

renamed as (

    select
        ---------- ids
        event_id,
        user_id,
        item_id,

        ---------- behaviour
        event_type,
        cast(level as int) as level,

        ---------- timestamps
        event_ts,
        cast(ds as date) as ds,

        ---------- lineage
        source,
        source_file,
        cast(source_line as int) as source_line

    from source

)

select * from renamed

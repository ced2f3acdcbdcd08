with

source as (

    select * from {{ source('bronze', 'quarantine') }}

),

renamed as (

    select
        ---------- where the row came from
        source,
        source_file,
        cast(source_line as int) as source_line,
        cast(ds as date) as ds,

        ---------- what was wrong
        reason,
        raw_line

    from source

)

select * from renamed

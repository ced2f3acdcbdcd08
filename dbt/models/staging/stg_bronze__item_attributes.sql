with

source as (

    select * from {{ source('bronze', 'item_attributes') }}

),

renamed as (

    select
        ---------- ids
        item_id,

        ---------- attributes
        item_name,
        category,
        subcategory,
        colour,
        tags

    from source

)

select * from renamed

with

source as (

    select * from {{ read_snapshot('bronze/item_attributes') }}

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

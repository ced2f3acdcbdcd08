with

source as (

    select * from {{ source('bronze', 'user_attributes') }}

),

renamed as (

    select
        ---------- ids
        user_id,

        ---------- attributes
        cast(age as int) as age,
        membership

    from source

)

select * from renamed

{{ config(**incremental_by_ds()) }}

{#- One row per (user, item, day D) with any event (fct_interactions' grain): the pair's state at the end of D, the
    repeat behaviour the ranker learns from. Cumulative counts and the last day of each level are exact; the interest
    scores are the own-history score sum(level reached x 0.5^(age / half-life)) over the pair's days up to D (days
    more than 10 half-lives back weigh under 0.1% and are left out). The state holds until the pair's next event day:
    as of a later day A, take the latest row before A and age it (spark_jobs/build_candidates.py does). -#}

{%- set levels = range(1, (var('max_level') | int) + 1) %}
{%- set half_lives = [14, 60] %}

with

pair_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

cumulative as (

    select
        user_id,
        item_id,
        ds,
        n_events,
        {%- for lv in levels %}
        n_level_{{ lv }},
        {%- endfor %}
        max_level,
        count(*) over pair_history as n_days_total,
        cast(sum(n_events) over pair_history as bigint) as n_events_total,
        {%- for lv in levels %}
        cast(sum(n_level_{{ lv }}) over pair_history as bigint) as n_level_{{ lv }}_total,
        cast(sum(case when max_level >= {{ lv }} then 1 else 0 end) over pair_history as bigint)
            as n_days_reaching_level_{{ lv }},
        max(case when n_level_{{ lv }} > 0 then ds end) over pair_history as last_ds_level_{{ lv }},
        {%- endfor %}
        min(ds) over pair_history as first_ds,
        lag(ds) over (partition by user_id, item_id order by ds) as previous_ds

    from pair_days
    window pair_history as (partition by user_id, item_id order by ds rows between unbounded preceding and current row)

),

in_run as (

    select * from cumulative
    {% if is_incremental() %}
    where {{ in_run_range() }}
    {% endif %}

),

interest as (

    select
        in_run.user_id,
        in_run.item_id,
        in_run.ds,
        {%- for hl in half_lives %}
        sum(earlier.max_level * power(0.5, {{ dbt.datediff('earlier.ds', 'in_run.ds', 'day') }} / {{ hl }}.0))
            as interest_{{ hl }}d{{ "," if not loop.last }}
        {%- endfor %}

    from in_run
    inner join pair_days as earlier
        on in_run.user_id = earlier.user_id
        and in_run.item_id = earlier.item_id
        and earlier.ds <= in_run.ds
        and earlier.ds > {{ dbt.dateadd('day', -10 * (half_lives | max), 'in_run.ds') }}
    group by in_run.user_id, in_run.item_id, in_run.ds

),

final as (

    select
        ---------- keys
        in_run.user_id,
        in_run.item_id,

        ---------- the day itself
        in_run.n_events,
        {%- for lv in levels %}
        in_run.n_level_{{ lv }},
        {%- endfor %}
        in_run.max_level as max_level_reached,

        ---------- through the end of the day
        in_run.n_days_total,
        in_run.n_events_total,
        {%- for lv in levels %}
        in_run.n_level_{{ lv }}_total,
        in_run.n_days_reaching_level_{{ lv }},
        in_run.last_ds_level_{{ lv }},
        {%- endfor %}
        in_run.first_ds,
        in_run.previous_ds,
        {%- for hl in half_lives %}
        interest.interest_{{ hl }}d,
        {%- endfor %}

        ---------- time
        {{ known_at('in_run.ds') }} as feature_ts,
        in_run.ds

    from in_run
    inner join interest
        on in_run.user_id = interest.user_id
        and in_run.item_id = interest.item_id
        and in_run.ds = interest.ds

)

select * from final

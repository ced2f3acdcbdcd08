{{ config(**incremental_by_ds()) }}

{#- One row per (item, day D) for items with events in the 90 days up to D; known at D+1 00:00 (feature_ts).
    Conversion from level k to k+1 over 30 days: users who reached at least k+1 / users who reached at least k.
    Buyers are users who reached the source's highest level. Repurchase over the 365 days up to D: the share of the
    item's buyers who bought it on two or more days, and the median days between one buyer's consecutive purchase
    days of it (a rebuy cycle; the earlier purchase may lie before the window).

    How (docs/decisions.md, decision 38): every windowed count is a running sum of changes. A (user, item) day row
    adds its events to n_events_7d on its day and takes them away 7 days later; the user counts among the item's
    7-day users from their day until the sooner of their next day with the item and 7 days later, so one +1 and one
    -1 per row count each user once. Each row makes two changes per measure, and the work grows with the rows, not
    with rows x window days (pairing every day with its 90-day window copied each row up to 90 times and did not
    fit in memory at 100x the Tmall log). Only the median needs the rows of its window: the rebuy gaps, a small part
    of the purchases, are paired with their 365-day window as before. -#}

{%- set windows = [7, 30, 90] %}
{%- set top_level = var('max_level') | int %}
{%- set rebuy_window = 365 %}

{#- Each measure: the rows that count, what they add, and the day (exclusive) their contribution ends. -#}
{%- set measures = [] %}
{%- for w in windows %}
{%- do measures.append({'name': 'n_events_' ~ w ~ 'd', 'where': 'true', 'value': 'n_events',
    'until': dbt.dateadd('day', w, 'ds')}) %}
{%- do measures.append({'name': 'n_users_' ~ w ~ 'd', 'where': 'true', 'value': '1',
    'until': window_exit('next_ds_level_1', w)}) %}
{%- do measures.append({'name': 'n_buyers_' ~ w ~ 'd', 'where': 'max_level = ' ~ top_level, 'value': '1',
    'until': window_exit('next_ds_level_' ~ top_level, w)}) %}
{%- endfor %}
{%- for lv in range(1, top_level + 1) %}
{%- do measures.append({'name': 'n_users_reaching_level_' ~ lv ~ '_30d', 'where': 'max_level >= ' ~ lv, 'value': '1',
    'until': window_exit('next_ds_level_' ~ lv, 30)}) %}
{%- endfor %}
{%- do measures.append({'name': 'n_buyers_365d', 'where': 'max_level = ' ~ top_level, 'value': '1',
    'until': window_exit('next_ds_level_' ~ top_level, rebuy_window)}) %}
{#- A buyer has bought on two or more days of the window from their second purchase day until the sooner of their
    next purchase day and 365 days after the purchase before it. -#}
{%- do measures.append({'name': 'n_rebuyers_365d',
    'where': 'max_level = ' ~ top_level ~ ' and previous_purchase_ds > ' ~ dbt.dateadd('day', -rebuy_window, 'ds'),
    'value': '1',
    'until': window_exit('next_ds_level_' ~ top_level, rebuy_window, 'previous_purchase_ds')}) %}

with

user_item_days as (

    select * from {{ ref('int_events__user_item_days') }}

),

calendar as (

    {{ run_calendar('user_item_days') }}

),

-- Each (user, item) day with the pair's next day reaching each level and its previous purchase day, looked up over
-- the whole history before any day is left out.
pair_days as (

    select
        user_id,
        item_id,
        ds,
        n_events,
        max_level,
        {%- for lv in range(1, top_level + 1) %}
        min(case when max_level >= {{ lv }} then ds end) over (
            partition by user_id, item_id order by ds rows between 1 following and unbounded following
        ) as next_ds_level_{{ lv }},
        {%- endfor %}
        max(case when max_level = {{ top_level }} then ds end) over (
            partition by user_id, item_id order by ds rows between unbounded preceding and 1 preceding
        ) as previous_purchase_ds
    from user_item_days

),

-- A day more than 365 days before the run's first day has ended all its contributions by then.
pair_days_in_scope as (

    select * from pair_days
    {% if is_incremental() %}
    where ds > {{ dbt.dateadd('day', -rebuy_window, "cast('" ~ var('start_ds') ~ "' as date)") }}
        and ds < cast('{{ var("end_ds") }}' as date)
    {% endif %}

),

edges as (

    {%- for m in measures %}
    select '{{ m.name }}' as measure, 1 as sign
    union all
    select '{{ m.name }}' as measure, -1 as sign
    {{- " union all" if not loop.last }}
    {%- endfor %}

),

changes as (

    select
        pair_days_in_scope.item_id,
        edges.measure,
        case
            when edges.sign = 1 then pair_days_in_scope.ds
            {%- for m in measures %}
            when edges.measure = '{{ m.name }}' then cast({{ m.until }} as date)
            {%- endfor %}
        end as change_ds,
        edges.sign * case
            {%- for m in measures %}
            when edges.measure = '{{ m.name }}' and {{ m.where }} then {{ m.value }}
            {%- endfor %}
            else 0
        end as delta

    from pair_days_in_scope
    cross join edges

),

-- Each item needs a row on every run day of its span, also on days when nothing changes.
item_spans as (

    select item_id, min(ds) as first_ds, max(ds) as last_ds
    from pair_days_in_scope
    group by item_id

),

run_days as (

    select item_spans.item_id, calendar.ds
    from item_spans
    inner join calendar
        on calendar.ds >= item_spans.first_ds
        and calendar.ds < {{ dbt.dateadd('day', windows | max, 'item_spans.last_ds') }}

),

daily_changes as (

    select
        item_id,
        ds,
        {%- for m in measures %}
        cast(sum(case when measure = '{{ m.name }}' then delta else 0 end) as bigint) as change_{{ m.name }}
        {{- "," if not loop.last }}
        {%- endfor %}

    from (
        select item_id, change_ds as ds, measure, delta from changes where delta <> 0
        union all
        select item_id, ds, null as measure, 0 as delta from run_days
    ) as timeline
    group by item_id, ds

),

running as (

    select
        item_id,
        ds,
        {%- for m in measures %}
        sum(change_{{ m.name }}) over (
            partition by item_id order by ds rows between unbounded preceding and current row
        ) as {{ m.name }}{{ "," if not loop.last }}
        {%- endfor %}

    from daily_changes

),

popularity as (

    select running.*
    from running
    inner join calendar on running.ds = calendar.ds
    where running.n_users_90d > 0

),

purchase_gaps as (

    select
        item_id,
        ds,
        {{ dbt.datediff('previous_purchase_ds', 'ds', 'day') }} as days_since_previous
    from pair_days_in_scope
    where max_level = {{ top_level }} and previous_purchase_ds is not null

),

rebuy_cycle as (

    select
        calendar.ds,
        purchase_gaps.item_id,
        {{ median('purchase_gaps.days_since_previous') }} as median_days_between_purchases_365d

    {{ trailing_window_join('purchase_gaps', rebuy_window) }}
    group by calendar.ds, purchase_gaps.item_id

),

final as (

    select
        ---------- keys
        popularity.item_id,

        ---------- popularity
        {%- for w in windows %}
        cast(popularity.n_events_{{ w }}d as bigint) as n_events_{{ w }}d,
        cast(popularity.n_users_{{ w }}d as bigint) as n_users_{{ w }}d,
        cast(popularity.n_buyers_{{ w }}d as bigint) as n_buyers_{{ w }}d,
        {%- endfor %}
        -- users over the last 7 days against the 30-day weekly average: above 1 the item is rising
        {{ ratio('popularity.n_users_7d * 30', 'popularity.n_users_30d * 7') }} as trend_7d_30d,

        ---------- repurchase
        cast(popularity.n_buyers_365d as bigint) as n_buyers_365d,
        {{ ratio('popularity.n_rebuyers_365d', 'popularity.n_buyers_365d') }} as repurchase_rate_365d,
        rebuy_cycle.median_days_between_purchases_365d,

        ---------- funnel
        {%- for lv in range(1, top_level + 1) %}
        cast(popularity.n_users_reaching_level_{{ lv }}_30d as bigint) as n_users_reaching_level_{{ lv }}_30d,
        {%- endfor %}
        {%- for lv in range(1, top_level) %}
        {{ ratio('popularity.n_users_reaching_level_' ~ (lv + 1) ~ '_30d', 'popularity.n_users_reaching_level_' ~ lv ~ '_30d') }}
            as conversion_level_{{ lv }}_to_{{ lv + 1 }}_30d,
        {%- endfor %}

        ---------- time
        {{ known_at('popularity.ds') }} as feature_ts,
        popularity.ds

    from popularity
    left join rebuy_cycle
        on popularity.item_id = rebuy_cycle.item_id
        and popularity.ds = rebuy_cycle.ds

)

select * from final

-- Example queries for analysts, run against the analysts' database (opened read-only):
--   .venv/bin/nightrec sql --file docs/analyst_queries.sql
--   .venv/bin/nightrec sql "select count(*) from marts.fct_interactions"
-- Any DuckDB client can open warehouse/analytics/nightrec.duckdb read-only as well.
-- Schemas: marts (dbt marts), bronze (events, quarantine), silver (sequences). A semicolon ends each query.

-- 1. Most engaged users as of the latest day: buys and events over 30 days (Tmall levels: 1 click .. 4 buy)
select user_id, n_level_4_30d as buys_30d, n_events_30d, recency_days, top_item_90d
from marts.user_features
where ds = (select max(ds) from marts.user_features)
order by buys_30d desc, n_events_30d desc, user_id
limit 10;

-- 2. One user's history, in order
select ds, item_id, event_type, level
from bronze.events
where user_id = '10944750'
order by event_ts, source_file, source_line;

-- 3. Brand conversion funnel: clicks, collects, carts, buys and buys per click
select
    item_id,
    sum(n_level_1) as clicks,
    sum(n_level_2) as collects,
    sum(n_level_3) as carts,
    sum(n_level_4) as buys,
    round(cast(sum(n_level_4) as double) / nullif(sum(n_level_1), 0), 4) as buys_per_click
from marts.fct_interactions
group by item_id
order by buys desc, item_id
limit 10;

-- 4. Daily volume and data health: events, active users and quarantined rows per day
select
    e.ds,
    count(*) as events,
    count(distinct e.user_id) as users,
    (select count(*) from bronze.quarantine as q where q.ds = e.ds) as quarantined
from bronze.events as e
group by e.ds
order by e.ds desc
limit 14;

-- 5. Exposure labels per month: how often a touched brand ends in a click, collect, cart or buy
select date_trunc('month', ds) as month, label, count(*) as exposures
from marts.training_examples
group by 1, 2
order by 1, 2;

-- 6. Open intent as of the latest day: brands a user carted after their last purchase of them (or never bought),
--    from the latest state of each user and brand (user_item_features has one row per user, item and event day, and
--    that state holds until the next event), with the own-history interest aged to the latest day
with newest as (
    select
        *,
        row_number() over (partition by user_id, item_id order by ds desc) as recency_rank,
        (select max(ds) from marts.user_item_features) as as_of
    from marts.user_item_features
)
select
    user_id,
    item_id,
    last_ds_level_3 as last_cart,
    last_ds_level_4 as last_buy,
    n_days_total as active_days,
    round(interest_14d * pow(0.5, date_diff('day', ds, as_of) / 14.0), 3) as interest_now
from newest
where recency_rank = 1
    and last_ds_level_3 is not null
    and (last_ds_level_4 is null or last_ds_level_3 > last_ds_level_4)
order by last_cart desc, interest_now desc, user_id, item_id
limit 10;

-- 7. What fills the published lists: top-20 slots by the list's ranker (or baseline) and the sources that proposed
--    each item (an item proposed by several sources counts once per source)
select source, proposed_by, count(*) as slots
from (select source, unnest(sources) as proposed_by from marts.topk_current where rank <= 20)
group by source, proposed_by
order by slots desc;


-- 8. The consumer segments of the latest night: size, automatic label and behaviour beside each other
select
    segment_id,
    label,
    consumers,
    round(share, 3) as share,
    round(mean_events, 1) as mean_events,
    round(top_level_share, 3) as reached_top_level,
    round(recency_days, 1) as days_since_last_event
from marts.segment_profiles
where ds = (select max(ds) from marts.segment_profiles)
order by consumers desc;

-- 9. What sets each segment apart: its most over-represented items (lift over all consumers, with counts)
select segment_id, label, item.item_id, item.name, item.consumers, round(item.lift, 2) as lift
from (
    select segment_id, label, unnest(top_items) as item
    from marts.segment_profiles
    where ds = (select max(ds) from marts.segment_profiles)
)
order by segment_id, lift desc, item.consumers desc
limit 30;

-- 10. Movement between the last two nights: consumers per (segment before, segment now), the diagonal stayed put
with last_two as (
    select user_id, segment_id, ds
    from marts.segment_membership
    where ds in (select distinct ds from marts.segment_membership order by ds desc limit 2)
),
paired as (
    select user_id, ds, segment_id, lag(segment_id) over (partition by user_id order by ds) as segment_before
    from last_two
)
select segment_before, segment_id as segment_now, count(*) as consumers
from paired
where segment_before is not null
group by 1, 2
order by 1, 2;

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

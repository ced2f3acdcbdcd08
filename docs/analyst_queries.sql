-- Example queries for analysts, run against the analysts' database (opened read-only):
--   .venv/bin/nightrec sql --file docs/analyst_queries.sql
--   .venv/bin/nightrec sql "select count(*) from marts.fct_interactions"
-- Any DuckDB client can open warehouse/analytics/nightrec.duckdb read-only as well.
-- Schemas: marts (dbt marts), bronze (events, quarantine), silver (sequences). A semicolon ends each query.

-- The queries hold for every source: a level is a behaviour's rank, 1 the weakest (Tmall: 1 click, 2 collect, 3 cart,
-- 4 buy, H&M: one level, a purchase), and "the top level" is the highest one in the data.

-- 1. Most engaged users over the latest 30 days: events at the top level and all events, beside their features
with as_of as (select max(ds) as day, max(level) as top_level from bronze.events),
recent as (
    select user_id, count(*) filter (where level = top_level) as top_level_events_30d, count(*) as events_30d
    from bronze.events, as_of
    where ds > day - interval 30 day
    group by user_id
)
select r.user_id, r.top_level_events_30d, r.events_30d, f.recency_days, f.top_item_90d
from recent as r
left join marts.user_features as f on f.user_id = r.user_id and f.ds = (select max(ds) from marts.user_features)
order by r.top_level_events_30d desc, r.events_30d desc, r.user_id
limit 10;

-- 2. One user's history, in order (the user with most events, or put any user_id in its place)
select ds, item_id, event_type, level
from bronze.events
where user_id = (select user_id from bronze.events group by user_id order by count(*) desc, user_id limit 1)
order by event_ts, source_file, source_line
limit 50;

-- 3. Conversion funnel of the ten items with most top-level events: events per level, and per level-1 event
with counts as (
    select item_id, level, any_value(event_type) as event_type, count(*) as events
    from bronze.events
    group by item_id, level
),
top_items as (
    select item_id
    from counts
    where level = (select max(level) from counts)
    order by events desc, item_id
    limit 10
)
select
    c.item_id,
    c.level,
    c.event_type,
    c.events,
    round(c.events / max(c.events) filter (where c.level = 1) over (partition by c.item_id), 4) as per_level_1_event
from counts as c
join top_items using (item_id)
order by c.item_id, c.level;

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

-- 6. Open intent as of the latest day: items a user reached the level just below the top with (a cart on Tmall)
--    after their last top-level event on them (a buy), or never reached the top with (none on a one-level source)
with as_of as (select max(ds) as day, max(level) as top_level from bronze.events),
last_events as (
    select
        user_id,
        item_id,
        max(ds) filter (where level = top_level - 1) as last_below_top,
        max(ds) filter (where level = top_level) as last_top,
        count(distinct ds) as active_days,
        any_value(day) as as_of
    from bronze.events, as_of
    group by user_id, item_id
)
select user_id, item_id, last_below_top, last_top, active_days, date_diff('day', last_below_top, as_of) as days_open
from last_events
where last_below_top is not null and (last_top is null or last_below_top > last_top)
order by last_below_top desc, active_days desc, user_id, item_id
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

"""Data quality at the zone boundaries with Great Expectations (GX Core 1.x).

* raw landing (before ingest): schema, well-formed rows, keys present, times in the source's format, event
  types the adapter knows, times inside the delivery day;
* bronze (after ingest): event ids unique, keys present, levels in range, times inside their day, quarantine
  reasons known, row counts equal to the ingest reconciliation;
* marts (after dbt): interaction counts reconcile with bronze, no null keys, keys unique, rates in [0, 1].

Each expectation is *critical* (the run stops, the message names the table, the expectation and sample
offending rows) or a *warning* (recorded in the run manifest and the Data Docs, the run goes on). Raw row-level
expectations tolerate ``quality.max_bad_row_fraction`` bad rows: those are quarantined by ingest with their
reason and reported as a warning. Frames are validated with pandas (GX on Spark is ~40x slower here).
"""

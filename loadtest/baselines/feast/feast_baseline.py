"""The benchmark's Feast baseline: a Feast feature repository over the same
Redis as the gateway, loaded with the same demo rows through Feast's own writer.

    python feast_baseline.py setup --dir D --redis 127.0.0.1:6379 --join-keys '{"user": "user_id", "item": "item_id"}'
        writes D/feature_store.yaml and applies the definitions below
        (Feast's own registry file, D/registry.db)
    python feast_baseline.py load --dir D --rows rows.jsonl --join-keys '{...}'
        writes every row of rows.jsonl (the format of store/rows.ts, with a
        numeric eventTime) with FeatureStore.write_to_online_store, so the
        keys and hashes in Redis are Feast's own layout

Then `feast -c D serve` answers /get-online-features. Names follow the
gateway's registry: entities `user` and `item` with the join keys it
declares (`feastJoinKey`, passed in as --join-keys by loadtest/baselines/feast.ts),
views clickStats (v2, the active version), profile, itemStats; the TTLs
match the benchmark's (1 h), so nothing is OUTSIDE_MAX_AGE during a run.
"""
import argparse
import json
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

TTL = timedelta(hours=1)
FEATURE_STORE_YAML = """project: fg_bench
provider: local
registry: {registry}
online_store:
  type: redis
  connection_string: "{redis}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def definitions(source_path: str, join_keys: dict):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Bool, Float64, Int64, String

    user = Entity(name="user", join_keys=[join_keys["user"]], value_type=ValueType.STRING)
    item = Entity(name="item", join_keys=[join_keys["item"]], value_type=ValueType.STRING)
    # The offline source is never read: the benchmark writes the online store directly.
    source = FileSource(name="bench_rows", path=source_path, timestamp_field="event_timestamp")

    def view(name, entity, fields):
        return FeatureView(name=name, entities=[entity], ttl=TTL, schema=fields, source=source, online=True)

    return [
        user,
        item,
        view("clickStats", user, [Field(name="clickRate", dtype=Float64), Field(name="clicks", dtype=Int64), Field(name="impressions", dtype=Int64)]),
        view("profile", user, [Field(name="sessionLength", dtype=Int64), Field(name="isPremium", dtype=Bool), Field(name="country", dtype=String),
                               Field(name="embedding", dtype=Array(Float64))]),
        view("itemStats", item, [Field(name="ctr", dtype=Float64), Field(name="price", dtype=Float64), Field(name="category", dtype=String)]),
    ]


def setup(directory: Path, redis: str, join_keys: dict) -> None:
    from feast import FeatureStore

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(registry=directory / "registry.db", redis=redis))
    store = FeatureStore(repo_path=str(directory))
    store.apply(definitions(str(directory / "unused.parquet"), join_keys))
    print(json.dumps({"msg": "feast repository applied", "dir": str(directory), "views": [v.name for v in store.list_feature_views()]}), file=sys.stderr)


def load(directory: Path, rows_file: Path, join_keys: dict, batch: int = 20_000) -> None:
    import pandas as pd
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(directory))
    views = {v.name: v for v in store.list_feature_views()}
    pending = defaultdict(list)
    written = defaultdict(int)

    def flush(name: str) -> None:
        rows = pending.pop(name, [])
        if rows:
            store.write_to_online_store(feature_view_name=name, df=pd.DataFrame(rows))
            written[name] += len(rows)

    with rows_file.open() as lines:
        for number, line in enumerate(lines, 1):
            row = json.loads(line)
            name = row["view"]
            if name not in views:
                raise SystemExit(f"{rows_file}:{number}: view {name!r} is not in the Feast repository")
            record = {join_keys[row["entity"]]: row["id"], "event_timestamp": datetime.fromtimestamp(row["eventTime"] / 1000, tz=timezone.utc)}
            record.update(row["values"])
            pending[name].append(record)
            if len(pending[name]) >= batch:
                flush(name)
    for name in list(pending):
        flush(name)
    print(json.dumps({"msg": "rows written through Feast", "rows": dict(written)}), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--dir", required=True, type=Path)
    s.add_argument("--redis", required=True)
    l = sub.add_parser("load")
    l.add_argument("--dir", required=True, type=Path)
    l.add_argument("--rows", required=True, type=Path)
    for p in (s, l):
        p.add_argument("--join-keys", required=True, type=json.loads, help="entity name -> Feast join key, JSON (the registry's feastJoinKey)")
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.dir.resolve(), args.redis, args.join_keys)
    else:
        load(args.dir.resolve(), args.rows, args.join_keys)


if __name__ == "__main__":
    main()

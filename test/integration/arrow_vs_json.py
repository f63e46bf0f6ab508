"""Fetches the same persisted requests as GraphQL JSON and as Arrow IPC streams and compares them
value for value, decoding the Arrow answers with pyarrow (test/integration/arrow-python.test.ts
runs it and asserts on what it prints; README "Arrow responses").

Input, a JSON file named by the first argument:
  {"url": ..., "headers": {...}, "cases": [{"label": ..., "body": {...}, "ids": {root field: id or [ids]}}]}
Output, one JSON object on stdout:
  {"pyarrow": version, "results": [{"label", "rows", "errors", "stale", "nullEntities", "failedRows",
   "values", "mismatches": [...]}]}
"""
import json
import sys
from datetime import datetime, timezone

import pyarrow as pa
import requests

ARROW = "application/vnd.apache.arrow.stream"


def fetch(url, body, headers, accept):
    response = requests.post(url, json=body, headers={**headers, "accept": accept}, timeout=30)
    return response


def path_key(error):
    return json.dumps(error.get("path"))


def iso_ms(text):
    """An ISO-8601 event time of the JSON answer as a UTC datetime (millisecond precision)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def compare(case, headers, url):
    mismatches = []
    json_reply = fetch(url, case["body"], headers, "application/json")
    arrow_reply = fetch(url, case["body"], headers, ARROW)
    if json_reply.status_code != 200 or arrow_reply.status_code != 200:
        return {"mismatches": [f"status JSON {json_reply.status_code}, Arrow {arrow_reply.status_code}: {arrow_reply.text[:300]}"]}
    if arrow_reply.headers.get("content-type") != ARROW:
        mismatches.append(f"Arrow content-type {arrow_reply.headers.get('content-type')}")
    answer = json_reply.json()
    table = pa.ipc.open_stream(arrow_reply.content).read_all()

    # Errors: the schema metadata's list equals the JSON answer's (by path: the generic path orders by its fetches).
    arrow_errors = json.loads(table.schema.metadata[b"errors"])
    json_errors = answer.get("errors", [])
    if sorted(arrow_errors, key=path_key) != sorted(json_errors, key=path_key):
        mismatches.append(f"errors differ: Arrow {arrow_errors}, JSON {json_errors}")
    # The rows an error is about: (root, index) in a list, (root,) for a single entity.
    failed_rows = {tuple(p[:2]) if len(p) > 1 and isinstance(p[1], int) else (p[0],) for p in (e["path"] for e in arrow_errors)}

    rows = table.to_pylist()
    columns = [name for name in table.column_names if name not in ("field", "id")]
    data = answer.get("data") or {}
    counts = {"rows": len(rows), "errors": len(arrow_errors), "stale": 0, "nullEntities": 0, "failedRows": 0, "values": 0}
    r = 0
    for root, requested in case["ids"].items():
        plural = isinstance(requested, list)
        ids = requested if plural else [requested]
        entities = (data.get(root) or [None] * len(ids)) if plural else [data.get(root)]
        if len(entities) != len(ids):
            mismatches.append(f"{root}: {len(entities)} JSON entities for {len(ids)} ids")
        for k, requested_id in enumerate(ids):
            at = f"{root}[{k}]"
            if r >= len(rows):
                mismatches.append(f"{at}: no row")
                continue
            row = rows[r]
            r += 1
            if row["field"] != root:
                mismatches.append(f"{at}: row of root field {row['field']}")
            if row["id"] != requested_id:
                mismatches.append(f"{at}: id {row['id']}, requested {requested_id}")
            if ((root, k) if plural else (root,)) in failed_rows:
                counts["failedRows"] += 1
            entity = entities[k] if k < len(entities) else None
            if entity is None:
                counts["nullEntities"] += 1
            for column in columns:
                value = row[column]
                view_key, part = column.split(".", 1)
                view = entity.get(view_key) if entity is not None else None
                if entity is None or view is None:
                    if value is not None:
                        mismatches.append(f"{at}.{column}: {value!r} where JSON has {view_key}: {view!r}")
                    continue
                if part == "eventTime":
                    if not isinstance(value, datetime):
                        mismatches.append(f"{at}.{column}: {value!r} for a value that is there")
                    elif "eventTime" in view and iso_ms(view["eventTime"]) != value:
                        mismatches.append(f"{at}.{column}: {value.isoformat()}, JSON {view['eventTime']}")
                elif part == "stale":
                    if not isinstance(value, bool):
                        mismatches.append(f"{at}.{column}: {value!r} for a value that is there")
                    elif "stale" in view and view["stale"] != value:
                        mismatches.append(f"{at}.{column}: {value}, JSON {view['stale']}")
                    if value is True:
                        counts["stale"] += 1
                else:
                    if row[f"{view_key}.stale"] is True and value is not None:
                        mismatches.append(f"{at}.{column}: {value!r} in a stale value")
                    if part not in view:
                        if value is not None:
                            mismatches.append(f"{at}.{column}: {value!r}, not selected here")
                    # Equal values (JSON writes an integral double without a point); a bool is never a number here.
                    elif value != view[part] or isinstance(value, bool) != isinstance(view[part], bool):
                        mismatches.append(f"{at}.{column}: {value!r}, JSON {view[part]!r}")
                    elif value is not None:
                        counts["values"] += 1
    if r != len(rows):
        mismatches.append(f"{len(rows)} rows for {r} requested ids")
    # pandas reads it too, as a client would.
    frame = table.to_pandas()
    if len(frame) != len(rows):
        mismatches.append(f"pandas sees {len(frame)} rows")
    return {**counts, "mismatches": mismatches}


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    results = []
    for case in spec["cases"]:
        try:
            result = compare(case, spec.get("headers", {}), spec["url"])
        except Exception as error:  # a decoding failure is a mismatch of this case, reported with the others
            result = {"mismatches": [f"{type(error).__name__}: {error}"]}
        results.append({"label": case["label"], **result})
    print(json.dumps({"pyarrow": pa.__version__, "results": results}))


if __name__ == "__main__":
    main()

"""Feast's own Python SDK against the gateway's /get-online-features.

    FEAST_CHECK_TOKENS='{"inference": "<jwt>", "dashboard": "<jwt>", "admin": "<jwt>"}' \
        python feast_client_check.py --gateway http://127.0.0.1:PORT --dir D

For each principal it writes a Feast repository D/<name>/feature_store.yaml
whose online store is `{type: remote, path: <gateway>}` and whose auth is
`{type: oidc, token: <jwt>}` (the tokens come in the environment, not the
command line, which error messages print; Feast's client then sends
`Authorization: Bearer <jwt>`), with an empty local registry: string feature
references and a FeatureService named by its string references need no
definitions on the client. It calls FeatureStore.get_online_features for
single-entity, batch and multi-entity rows, a feature service, and requests
that must fail, and prints what Feast's SDK made of each answer as one JSON
document on stdout: to_dict(), the statuses and the proto value kind of every
value (how the client typed it), the pyarrow table's schema, and for failures
the exception's class, module and message. The TypeScript test
(test/integration/feast-sdk.test.ts) asserts on it; this script only reports.
"""
import argparse
import json
import os
import sys
from pathlib import Path

FEATURE_STORE_YAML = """project: feast_client_check
provider: local
registry: {registry}
online_store:
  type: remote
  path: {gateway}
{auth}entity_key_serialization_version: 3
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="the gateway's base URL (no path)")
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args()
    tokens = json.loads(os.environ["FEAST_CHECK_TOKENS"])

    import feast
    from feast import FeatureService, FeatureStore
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    def store(name, token):
        repo = args.dir / name
        repo.mkdir(parents=True, exist_ok=True)
        auth = f"auth:\n  type: oidc\n  token: {token}\n" if token else ""
        (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(registry=repo / "registry.db", gateway=args.gateway, auth=auth))
        return FeatureStore(repo_path=str(repo))

    def described(response):
        """What the SDK made of an answer: its dict, statuses, value kinds and Arrow schema."""
        names = list(response.proto.metadata.feature_names.val)
        table = response.to_arrow()
        return {
            "dict": response.to_dict(),
            "statuses": {n: [FieldStatus.Name(s) for s in fv.statuses] for n, fv in zip(names, response.proto.results)},
            "kinds": {n: [v.WhichOneof("val") for v in fv.values] for n, fv in zip(names, response.proto.results)},
            "arrow": {"rows": table.num_rows, "types": {f.name: str(f.type) for f in table.schema}},
        }

    def failure(call):
        try:
            call()
        except Exception as e:  # the point: which class Feast's client raises
            return {"raised": True, "class": type(e).__name__, "module": type(e).__module__, "message": str(e),
                    "bases": [c.__name__ for c in type(e).__mro__]}
        return {"raised": False}

    reader = store("inference", tokens["inference"])
    user_features = ["clickStats:clickRate", "clickStats:clicks", "profile:embedding", "profile:country", "profile:isPremium"]
    out = {"feast_version": feast.__version__}
    out["single"] = described(reader.get_online_features(features=user_features, entity_rows=[{"user_id": "1"}]))
    out["batch"] = described(reader.get_online_features(
        features=user_features, entity_rows=[{"user_id": i} for i in ["1", "2", "3", "21", "404"]]))
    out["integer_ids"] = described(reader.get_online_features(features=["clickStats:clicks"], entity_rows=[{"user_id": 2}, {"user_id": 3}]))
    out["multi_entity"] = described(reader.get_online_features(
        features=["clickStats:clickRate", "profile:embedding", "itemStats:ctr", "itemStats:price", "itemStats:category"],
        entity_rows=[{"user_id": "1", "item_id": "7"}, {"user_id": "2", "item_id": "8"}, {"user_id": "3", "item_id": "404"}],
        full_feature_names=True))
    # The client sends a FeatureService by its name alone; the registry says what it holds.
    ranking = FeatureService(name="ranking", features=[])
    out["service"] = described(reader.get_online_features(
        features=ranking, entity_rows=[{"user_id": "1", "item_id": "7"}, {"user_id": "21", "item_id": "8"}]))
    out["pinned_version"] = described(reader.get_online_features(
        features=["clickStats@v1:clickRate", "clickStats:clickRate"], entity_rows=[{"user_id": "1"}], full_feature_names=True))

    out["unknown_view"] = failure(lambda: reader.get_online_features(features=["clickz:clickRate"], entity_rows=[{"user_id": "1"}]))
    out["unknown_service"] = failure(lambda: reader.get_online_features(
        features=FeatureService(name="nope", features=[]), entity_rows=[{"user_id": "1"}]))
    out["collision"] = failure(lambda: reader.get_online_features(
        features=["clickStats:clickRate", "clickStats@v1:clickRate"], entity_rows=[{"user_id": "1"}]))
    out["mismatched_rows"] = failure(lambda: reader.get_online_features(
        features=["clickStats:clickRate", "itemStats:ctr"], entity_rows={"user_id": ["1", "2"], "item_id": ["7"]}))
    out["restricted_view"] = failure(lambda: reader.get_online_features(features=["riskProfile:riskScore"], entity_rows=[{"user_id": "1"}]))
    out["no_read_role"] = failure(lambda: store("dashboard", tokens["dashboard"]).get_online_features(
        features=["clickStats:clickRate"], entity_rows=[{"user_id": "1"}]))
    out["no_credentials"] = failure(lambda: store("anonymous", None).get_online_features(
        features=["clickStats:clickRate"], entity_rows=[{"user_id": "1"}]))
    out["admin_restricted_view"] = described(store("admin", tokens["admin"]).get_online_features(
        features=["riskProfile:riskScore", "riskProfile:flagged"], entity_rows=[{"user_id": "1"}]))
    out["arrow_vs_json"] = arrow_vs_json(args.gateway, tokens["inference"])
    json.dump(out, sys.stdout)


def arrow_vs_json(gateway, token):
    """The same request answered as Feast's JSON and as an Arrow stream (Accept), decoded with pyarrow:
    per feature column and entity row, PRESENT is the same value, OUTSIDE_MAX_AGE a null with stale
    true and the same event time, NOT_FOUND a null. Reports the disagreements and the statuses seen."""
    from datetime import datetime

    import pyarrow as pa
    import pyarrow.compute as pc
    import requests

    body = {"entities": {"user_id": ["1", "21", "404", "2"], "item_id": ["7", "8", "404", "7"]},
            "features": ["clickStats:clickRate", "clickStats:clicks", "profile:embedding", "profile:country", "itemStats:ctr", "itemStats:category"],
            "full_feature_names": True}
    headers = {"authorization": f"Bearer {token}"}
    answer = requests.post(f"{gateway}/get-online-features", json=body, headers=headers)
    answer.raise_for_status()
    doc = answer.json()
    stream = requests.post(f"{gateway}/get-online-features", json=body, headers={**headers, "accept": "application/vnd.apache.arrow.stream"})
    stream.raise_for_status()
    table = pa.ipc.open_stream(stream.content).read_all()
    problems, seen = [], set()
    join_keys = {"clickStats": "user_id", "profile": "user_id", "itemStats": "item_id"}
    for name, result in zip(doc["metadata"]["feature_names"], doc["results"]):
        if name in body["entities"]:
            continue
        view, feature = name.split("__")
        rows = table.filter(pc.equal(table["field"], join_keys[view.split("@")[0]])).to_pylist()
        for i, status in enumerate(result["statuses"]):
            seen.add(status)
            row = rows[i]
            got, stale, when = row[f"{view}.{feature}"], row[f"{view}.stale"], row[f"{view}.eventTime"]
            if status == "PRESENT":
                if got != result["values"][i] or stale is not False:
                    problems.append(f"{name}[{i}]: Arrow {got!r} stale {stale!r}, JSON {result['values'][i]!r}")
            elif got is not None:
                problems.append(f"{name}[{i}] {status}: Arrow has {got!r}")
            if status == "OUTSIDE_MAX_AGE" and stale is not True:
                problems.append(f"{name}[{i}] {status}: stale {stale!r}")
            if status in ("PRESENT", "OUTSIDE_MAX_AGE"):
                expected = datetime.fromisoformat(result["event_timestamps"][i].replace("Z", "+00:00"))
                if when != expected:
                    problems.append(f"{name}[{i}]: eventTime {when!r}, JSON {expected!r}")
    return {"problems": problems, "statuses": sorted(seen), "rows": table.num_rows,
            "errors": json.loads(table.schema.metadata[b"errors"])}


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""automation_api_openapi.py - docs/openapi.yaml: a response validator, and (run alone) its self-check.

Imported by automation_api_e2e.py, which validates every live answer with validate(). Run as a
test it checks the file itself: it parses, every $ref resolves, every route that
services/automation-api/main.c serves is described with a success and an error answer, and the
validator accepts a conforming and rejects a broken sample. Debian package: python3-yaml."""
import os
import re
import sys

try:
    import yaml
except ImportError:
    sys.exit("automation_api_openapi: python3-yaml is missing (apt-get install python3-yaml)")

ROOT = os.environ.get("QZ_TEST_ROOT") or os.path.join(os.path.dirname(__file__), "..", "..")
with open(os.path.join(ROOT, "docs", "openapi.yaml")) as f:
    SPEC = yaml.safe_load(f)
_seen = set()


def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        cur = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            cur = cur[part]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = dict(cur, **extra) if extra else cur
    return node


def check(schema, value, where="$"):
    """Returns None or the first mismatch as text. A subset of OpenAPI 3.0 schemas."""
    s = resolve(schema)
    if value is None:
        return None if s.get("nullable") else "%s: null not allowed" % where
    if "allOf" in s:
        for sub in s["allOf"]:
            e = check(sub, value, where)
            if e:
                return e
    t = s.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t in types and not isinstance(value, types[t]):
        return "%s: expected %s, got %r" % (where, t, value)
    if t == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return "%s: expected integer, got %r" % (where, value)
    if t == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "%s: expected number, got %r" % (where, value)
    if "enum" in s and value not in s["enum"]:
        return "%s: %r not in %s" % (where, value, s["enum"])
    if t == "string" and s.get("format") == "date-time" and not re.match(
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", value):
        return "%s: not an RFC 3339 time: %r" % (where, value)
    if t == "string" and s.get("format") == "uuid" and not re.match(
            r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", value):
        return "%s: not a uuid: %r" % (where, value)
    if isinstance(value, dict):
        for k in s.get("required", []):
            if k not in value:
                return "%s: missing %s" % (where, k)
        props = s.get("properties", {})
        for k, v in value.items():
            if k in props:
                e = check(props[k], v, where + "." + k)
                if e:
                    return e
            elif isinstance(s.get("additionalProperties"), dict):
                e = check(s["additionalProperties"], v, where + "." + k)
                if e:
                    return e
            elif s.get("additionalProperties") is False:
                return "%s: unexpected member %s" % (where, k)
    if isinstance(value, list) and "items" in s:
        for i, v in enumerate(value):
            e = check(s["items"], v, "%s[%d]" % (where, i))
            if e:
                return e
    return None


def find_operation(method, path):
    for pattern, item in SPEC["paths"].items():
        rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(pattern)) + "$"
        if re.match(rx, path) and method.lower() in item:
            return pattern, item[method.lower()]
    return None, None


def validate(method, path, status, body):
    """None when the answer matches the spec (or the path is not ours), else why not."""
    pattern, op = find_operation(method, path)
    if op is None:
        return None if status in (404, 405) else "no operation %s %s in the spec" % (method, path)
    resp = op["responses"].get(str(status)) or op["responses"].get("default")
    if resp is None:
        return "status %d not described" % status
    _seen.add((method.upper(), pattern, str(status) if str(status) in op["responses"] else "default"))
    resp = resolve(resp)
    schema = resp.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    if body is None:
        return "body is not JSON"
    return check(schema, body)


def coverage():
    return "%d (method, path, status) combinations seen" % len(_seen)


def self_check():
    bad = 0
    # every $ref resolves
    def walk(n):
        nonlocal bad
        if isinstance(n, dict):
            if "$ref" in n:
                try:
                    resolve(n)
                except KeyError:
                    print("unresolved", n["$ref"])
                    bad += 1
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)
    walk(SPEC)
    # every route main.c serves is described, with a success and a default answer
    with open(os.path.join(ROOT, "services", "automation-api", "main.c")) as f:
        routes = re.findall(r'\{"(GET|POST|PATCH|PUT|DELETE)", "(/[^"]*)"', f.read())
    if len(routes) < 13:
        print("found only %d routes in main.c" % len(routes))
        bad += 1
    for method, path in routes:
        op = SPEC["paths"].get(path, {}).get(method.lower())
        if not op:
            print("route not in docs/openapi.yaml:", method, path)
            bad += 1
            continue
        codes = set(op["responses"])
        if not any(c.startswith("2") for c in codes) or "default" not in codes:
            print("route without success or error answer:", method, path)
            bad += 1
    # the validator itself
    ok_track = {"id": "8e1f7a52-0000-4000-8000-000000000001", "title": "t", "duration_ms": 1,
                "genres": [], "artists": {"id": None, "name": None}, "albums": None}
    samples = [("GET", "/api/automation/trending", 200,
                {"tracks": [dict(ok_track, trending_data={
                    "trend_score": 1.5, "play_count_24h": 1, "play_count_7d": 2,
                    "unique_listeners_24h": 1, "unique_listeners_7d": 1,
                    "calculated_at": "2025-01-18T00:00:00.000Z"})], "total": 1,
                 "calculated_at": None}, True),
               ("GET", "/api/automation/trending", 200, {"tracks": [ok_track], "total": 1,
                                                         "calculated_at": None}, False),
               ("GET", "/api/automation/trending", 400,
                {"error": {"code": "bad_request", "message": "x"}}, True),
               ("POST", "/api/automation/trigger", 400,
                {"error": {"code": "bad_request", "message": "x"}}, False),
               ("PATCH", "/api/automation/jobs/x", 200, {"name": "x"}, False)]
    for method, path, status, body, want in samples:
        got = validate(method, path, status, body) is None
        if got != want:
            print("validator wrong on", method, path, status, body)
            bad += 1
    print("automation_api_openapi: %d routes described; %s" % (len(routes), "ok" if not bad else
                                                                "%d problems" % bad))
    return bad


if __name__ == "__main__":
    sys.exit(1 if self_check() else 0)

#!/usr/bin/python3
"""avro_interop.py - the C codec (qoqnuzctl avro) against python3-avro, both ways.

The canonical form and CRC-64-AVRO fingerprint are computed here, independently
of the C code (python3-avro 1.11.1 keeps logical types in its canonical form,
which the spec strips), and checked against vectors from the Avro spec. Then,
for every schema in schemas/: C encodes -> Python checks the header against its
own fingerprint and decodes the body with python3-avro; Python encodes -> C
decodes. Run from the repo root with QZ_TEST_BIN set; exit 0 = pass.
"""
import base64
import copy
import io
import json
import os
import struct
import subprocess
import sys

import avro.io
import avro.schema

FAILURES = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILURES.append(what)
    return ok


# ---- Parsing Canonical Form and CRC-64-AVRO, from the spec -------------------

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
EMPTY64 = 0xC15D213AA4D7A795


def crc64(data):
    fp = EMPTY64
    for b in data:
        fp ^= b
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY64 & -(fp & 1))
    return fp


def fullname(name, ns):
    return name if "." in name or not ns else ns + "." + name


def canonical(s, ns=""):
    if isinstance(s, str):
        return json.dumps(s if s in PRIMITIVES else fullname(s, ns))
    if isinstance(s, list):
        return "[" + ",".join(canonical(b, ns) for b in s) + "]"
    t = s["type"]
    if isinstance(t, (dict, list)):
        return canonical(t, ns)
    if t in PRIMITIVES:
        return json.dumps(t)  # [PRIMITIVES], logical types stripped
    if t in ("record", "error", "enum", "fixed"):
        name = s["name"]
        if "." not in name and "namespace" in s:
            ns = s["namespace"]
        full = fullname(name, ns)
        inner = full.rpartition(".")[0]
        head = '{"name":%s,"type":%s' % (json.dumps(full), json.dumps("record" if t == "error" else t))
        if t == "enum":
            return head + ',"symbols":[' + ",".join(json.dumps(x) for x in s["symbols"]) + "]}"
        if t == "fixed":
            return head + ',"size":%d}' % int(s["size"])
        fields = ",".join('{"name":%s,"type":%s}' % (json.dumps(f["name"]), canonical(f["type"], inner))
                          for f in s["fields"])
        return head + ',"fields":[' + fields + "]}"
    if t == "array":
        return '{"type":"array","items":%s}' % canonical(s["items"], ns)
    if t == "map":
        return '{"type":"map","values":%s}' % canonical(s["values"], ns)
    return json.dumps(fullname(t, ns))


# From Apache Avro share/test/data/schema-tests.txt (fingerprints are signed).
SPEC_VECTORS = [
    ('"int"', '"int"', 8247732601305521295),
    ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
    ('{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
     '{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
    ('{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}',
     '{"name":"a.b.foo","type":"record","fields":[]}', -4616218487480524110),
    ('{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":"true"}, '
     '{"order":"descending","name":"f2","doc":"Hello","type":"int"}], "type":"record", "name":"foo" }',
     '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}',
     -4860222112080293046),
    ('{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}',
     '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245),
    ('{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}',
     '{"name":"x.y.z.foo","type":"fixed","size":32}', -3064184465700546786),
    ('{ "items":{"type":"null"}, "type":"array"}', '{"type":"array","items":"null"}',
     -589620603366471059),
    ('{ "values":"string", "type":"map"}', '{"type":"map","values":"string"}', -8732877298790414990),
    ('{"name":"PigValue","type":"record", "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
     '{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}',
     -1759257747318642341),
]

# Rules the spec file has no vector for: nested names inherit the namespace,
# logical types and docs are stripped.
OWN_VECTORS = [
    ('{"type":"record","name":"Outer","namespace":"a.b","fields":[{"name":"in","type":{"type":"record",'
     '"name":"Inner","fields":[{"name":"e","type":{"type":"enum","name":"E","namespace":"c","symbols":["X"]}}]}},'
     '{"name":"again","type":"Inner"},{"name":"t","type":["null",{"type":"long","logicalType":"timestamp-millis"}],'
     '"default":null,"doc":"d"}]}',
     '{"name":"a.b.Outer","type":"record","fields":[{"name":"in","type":{"name":"a.b.Inner","type":"record",'
     '"fields":[{"name":"e","type":{"name":"c.E","type":"enum","symbols":["X"]}}]}},{"name":"again","type":'
     '"a.b.Inner"},{"name":"t","type":["null","long"]}]}'),
]

# ---- sample values: JSON form as the C API takes it --------------------------

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"
T0 = 1780000000000

SAMPLES = {
    "PlayEvent": [
        {"event_id": U1, "user_id": U2, "track_id": U3, "played_at": T0, "duration_played_ms": 183000,
         "completed": True, "source": "smart_playlist", "device_type": "mobile", "source_playlist_id": U1},
        {"event_id": U1, "user_id": U2, "track_id": U3, "played_at": 0, "duration_played_ms": 0,
         "completed": False, "source": "", "device_type": "web"},
    ],
    "RejectedEvent": [
        {"original_topic": "plays.v1", "original_partition": 7, "original_offset": 123456789012,
         "original_key": base64.b64encode(b"user-1").decode(),
         "original_value": base64.b64encode(b"\xc3\x01\x00\x01\x02\x03\xff").decode(),
         "reason": "decode_error", "errors": ["field 'played_at': expected integer", "\u00e9t\u00e9 \U0001f3b5"],
         "service": "stats-aggregator", "rejected_at": T0},
        {"original_topic": "t", "original_partition": -2147483648, "original_offset": -(2 ** 63),
         "original_value": "", "reason": "r", "service": "s", "rejected_at": 2 ** 63 - 1},
    ],
    "TrackEvent": [
        {"op": "upsert", "track_id": U1, "title": "Bohemian Rhapsody", "artist_id": U2, "artist_name": "Queen",
         "album_id": U3, "album_title": "A Night at the Opera", "duration_ms": 354000,
         "genres": ["rock", "progressive rock"], "popularity": 97, "released_at": "1975-10-31",
         "audio_url": "s3://audio/1.flac", "updated_at": T0},
        {"op": "delete", "track_id": U1, "title": "x" * 300, "artist_id": U2, "artist_name": "A",
         "duration_ms": 1, "genres": [], "popularity": 0, "updated_at": T0},
    ],
    "AnalysisTask": [
        {"task_id": U1, "task_type": "mood_detection", "entity_type": "track", "entity_id": U2, "priority": 7,
         "attempt": 2, "not_before": T0},
        {"task_id": U1, "task_type": "energy_analysis", "entity_type": "track", "entity_id": U2, "priority": 10,
         "attempt": 1},
    ],
    "TrackFeatures": [
        {"track_id": U1, "task_type": "energy_analysis", "tempo": 128.5, "loudness_lufs": -9.25,
         "loudness_range": 6.5, "energy": 0.875, "valence": 0.5, "danceability": 0.75, "acousticness": 0.125,
         "instrumentalness": 0.0625, "mood": "energetic", "mood_tags": ["upbeat", "party"], "genre": "house",
         "genre_confidence": 0.9375, "analyzed_at": T0},
        {"track_id": U1, "genre": "jazz", "genre_confidence": 0.1, "analyzed_at": T0},
    ],
    "PlaylistRequest": [
        {"request_id": U1, "user_id": U2, "playlist_type": "artist_radio",
         "params": {"artist_id": U3, "limit": "50"}, "reason": "manual", "run_id": None},
        {"request_id": U1, "user_id": U2, "playlist_type": "daily_mix", "reason": "schedule", "run_id": U3},
    ],
    "PlaylistGenerated": [
        {"request_id": U1, "user_id": U2, "playlist_id": U3, "playlist_type": "daily_mix", "track_count": 50,
         "generated_at": T0, "expires_at": T0 + 86400000, "run_id": U1},
        {"request_id": U1, "user_id": U2, "playlist_id": U3, "playlist_type": "mood", "track_count": 0,
         "generated_at": T0, "expires_at": T0},
    ],
    "AutomationCommand": [
        {"command_id": U1, "job": "generate-smart-playlists", "run_id": U2,
         "params": {"user_id": U3, "playlist_type": "daily_mix"}, "issued_at": T0},
        {"command_id": U1, "job": "calculate-trending", "run_id": U2, "issued_at": T0},
    ],
}


def strip_logical(s):
    """Logical types do not change the binary encoding; python3-avro would want
    datetime/Decimal objects for them, so it gets the underlying types."""
    if isinstance(s, list):
        return [strip_logical(x) for x in s]
    if isinstance(s, dict):
        return {k: strip_logical(v) for k, v in s.items() if k != "logicalType"}
    return s


def resolve(t, named, ns=""):
    if isinstance(t, dict) and isinstance(t.get("type"), (dict, list)):
        return resolve(t["type"], named, ns)
    if isinstance(t, str) and t not in PRIMITIVES:
        return named[fullname(t, ns)]
    if isinstance(t, dict) and t["type"] in PRIMITIVES:
        return t["type"]
    return t


def collect_named(s, named, ns=""):
    if isinstance(s, list):
        for b in s:
            collect_named(b, named, ns)
    elif isinstance(s, dict):
        t = s.get("type")
        if t in ("record", "error", "enum", "fixed"):
            if "." not in s["name"] and "namespace" in s:
                ns = s["namespace"]
            full = fullname(s["name"], ns)
            named[full] = s
            for f in s.get("fields", []):
                collect_named(f["type"], named, full.rpartition(".")[0])
        elif t in ("array", "map"):
            collect_named(s.get("items", s.get("values")), named, ns)
        elif isinstance(t, (dict, list)):
            collect_named(t, named, ns)


def fits(t, v):
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t in ("int", "long"):
        return isinstance(v, int) and not isinstance(v, bool)
    if t in ("float", "double"):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t in ("string", "bytes"):
        return isinstance(v, str)
    if isinstance(t, dict):
        return isinstance(v, {"record": dict, "map": dict, "array": list}.get(t["type"], str))
    return False


def convert(t, v, named, to_python):
    """JSON form (C API) <-> python3-avro form: defaults filled in, bytes as
    base64 strings in JSON and bytes objects in Python."""
    t = resolve(t, named)
    if isinstance(t, list):
        branch = next(b for b in (resolve(x, named) for x in t) if fits(b, v))
        return convert(branch, v, named, to_python)
    if t == "bytes" or (isinstance(t, dict) and t["type"] == "fixed"):
        return base64.b64decode(v, validate=True) if to_python else v
    if t in ("float", "double"):
        return float(v)
    if isinstance(t, dict) and t["type"] in ("record", "error"):
        out = {}
        for f in t["fields"]:
            fv = v[f["name"]] if f["name"] in v else copy.deepcopy(f["default"])
            out[f["name"]] = convert(f["type"], fv, named, to_python)
        return out
    if isinstance(t, dict) and t["type"] == "array":
        return [convert(t["items"], x, named, to_python) for x in v]
    if isinstance(t, dict) and t["type"] == "map":
        return {k: convert(t["values"], x, named, to_python) for k, x in v.items()}
    return v


def ctl(bin_dir, args, data):
    return subprocess.run([os.path.join(bin_dir, "qoqnuzctl"), "avro"] + args, input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


def main():
    bin_dir = os.environ.get("QZ_TEST_BIN")
    if not bin_dir:
        print("FAIL QZ_TEST_BIN is not set")
        return 1
    root = os.environ.get("QZ_TEST_ROOT") or "."
    schema_dir = os.path.join(root, "schemas")
    os.environ["QOQNUZ_SCHEMA_DIR"] = schema_dir

    for inp, want, fp in SPEC_VECTORS:
        got = canonical(json.loads(inp))
        check(got == want and crc64(got.encode()) == fp & 0xFFFFFFFFFFFFFFFF,
              "python canonical form + CRC-64-AVRO on spec vector %s" % want[:50])
    for inp, want in OWN_VECTORS:
        check(canonical(json.loads(inp)) == want, "python canonical form, nested namespaces + logical types")
    check(crc64(b"") == EMPTY64, "python crc64 of empty input is EMPTY")

    files = sorted(f for f in os.listdir(schema_dir) if f.endswith(".avsc"))
    check(len(files) > 0, "schemas found in %s" % schema_dir)
    fps = {}
    for fname in files:
        name = fname[:-5]
        with open(os.path.join(schema_dir, fname)) as fh:
            sj = json.load(fh)
        canon = canonical(sj)
        fp = crc64(canon.encode())
        header = b"\xc3\x01" + struct.pack("<Q", fp)
        fps[fp] = name
        named = {}
        collect_named(sj, named)
        full = fullname(sj["name"], sj.get("namespace", ""))
        check(full == "qoqnuz." + name, "%s: full name %s" % (name, full))
        check("logicalType" not in canon and '"doc"' not in canon, "%s: canonical form strips attributes" % name)
        pschema = avro.schema.parse(json.dumps(strip_logical(sj)))

        r = ctl(bin_dir, ["fingerprint", name], b"")
        lines = r.stdout.decode().split("\n")
        check(r.returncode == 0 and lines[0] == canon and lines[1] == header[2:].hex(),
              "%s: qoqnuzctl fingerprint agrees (%s)" % (name, header[2:].hex()))

        samples = SAMPLES.get(name)
        if not check(samples is not None, "%s: has sample values" % name):
            continue
        for i, sample in enumerate(samples):
            tag = "%s#%d" % (name, i)
            py_value = convert(sj, sample, named, True)
            json_value = convert(sj, sample, named, False)

            # C encodes -> Python decodes.
            r = ctl(bin_dir, ["encode", name], json.dumps(sample).encode())
            if not check(r.returncode == 0, "%s: C encode (%s)" % (tag, r.stderr.decode().strip())):
                continue
            out = r.stdout
            check(out[:10] == header, "%s: C header = C3 01 + python fingerprint" % tag)
            buf = io.BytesIO(out[10:])
            dec = avro.io.DatumReader(pschema).read(avro.io.BinaryDecoder(buf))
            check(buf.tell() == len(out) - 10, "%s: python consumed the whole C body" % tag)
            check(dec == py_value, "%s: python decodes the C body to the value" % tag)

            # Python encodes -> C decodes.
            wbuf = io.BytesIO()
            avro.io.DatumWriter(pschema).write(py_value, avro.io.BinaryEncoder(wbuf))
            msg = header + wbuf.getvalue()
            check(msg == out, "%s: python and C bytes are identical" % tag)
            r = ctl(bin_dir, ["decode"], msg)
            ok = r.returncode == 0
            doc = json.loads(r.stdout) if ok else {}
            check(ok and doc.get("schema") == "qoqnuz." + name and doc.get("value") == json_value,
                  "%s: C decodes the python bytes (%s)" % (tag, r.stderr.decode().strip()))

            # C rejects what is not exactly one message of a known schema.
            bad_fp = bytearray(msg)
            bad_fp[9] ^= 0xFF
            for what, data in (("truncated", msg[:-1]), ("trailing byte", msg + b"\x00"),
                               ("unknown fingerprint", bytes(bad_fp)), ("bad magic", b"\xc3\x02" + msg[2:])):
                r = ctl(bin_dir, ["decode"], data)
                check(r.returncode == 1 and r.stderr.count(b"\n") == 1 and not r.stdout,
                      "%s: C rejects %s: %s" % (tag, what, r.stderr.decode().strip()))

    check(len(fps) == len(files), "fingerprints are distinct")
    r = ctl(bin_dir, ["encode", "PlayEvent"], b'{"played_at": "yesterday"}')
    check(r.returncode == 1 and b"field '" in r.stderr, "C encode error names the field: %s" % r.stderr.decode().strip())

    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

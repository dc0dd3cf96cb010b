#!/usr/bin/python3
"""automation_api_e2e.py - automation-api end to end against the harness's Postgres, Redis and broker.

Starts the real binary (two replicas for the scheduler), then checks every endpoint: the auth
matrix, malformed bodies, limits, the trending Redis read path and its Postgres fallback with
Redis killed, tracks upload -> analysis tasks + tracks.v1 outbox, smart playlists (504 without a
builder, the real playlist-builder when its binary exists), worker, trigger/status, jobs; the
scheduler (one run per due time across replicas, a missed run runs once), the guide's SQL
functions (each run published; succeeded when its owner's binary exists in QZ_TEST_BIN); and
every JSON answer against docs/openapi.yaml. Needs Debian's python3-yaml."""
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

ENV = {k: os.environ[k] for k in ("QZ_TEST_PG_DSN", "QZ_TEST_REDIS_URL", "QZ_TEST_BROKERS",
                                  "QZ_TEST_BIN", "QZ_TEST_ROOT", "QZ_TEST_TMP")}
ROOT, BIN, TMP = ENV["QZ_TEST_ROOT"], ENV["QZ_TEST_BIN"], ENV["QZ_TEST_TMP"]
DSN = ENV["QZ_TEST_PG_DSN"]
SECRET, WORKER = "api-test-jwt", "api-test-worker-secret"
D = os.path.join(TMP, "api-e2e-%d" % os.getpid())
os.makedirs(D, exist_ok=True)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import automation_api_openapi as spec_check  # noqa: E402

procs = []
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, flush=True)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def psql(sql):
    out = subprocess.run(["psql", DSN, "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("psql: %s: %s" % (sql, out.stderr))
    return out.stdout.strip()


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(role="user", sub=None, exp_in=3600, secret=SECRET, alg="HS256"):
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub or str(uuid.uuid4()), "role": role,
                             "exp": int(time.time()) + exp_in}).encode())
    if alg == "none":
        return header + "." + claims + "."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret.encode(), (header + "." + claims).encode(), digest).digest()
    return header + "." + claims + "." + b64(sig)


def start_api(name, port, **env):
    e = dict(os.environ)
    e.update({"QOQNUZ_HTTP_ADDR": "127.0.0.1:%d" % port, "QOQNUZ_PG_DSN": DSN,
              "QOQNUZ_KAFKA_BROKERS": ENV["QZ_TEST_BROKERS"],
              "QOQNUZ_SCHEMA_DIR": os.path.join(ROOT, "schemas"),
              "JWT_SECRET": SECRET, "WORKER_SECRET": WORKER,
              "QOQNUZ_API_PLAYLIST_TIMEOUT_MS": "1500", "QOQNUZ_API_TRENDING_WAIT_MS": "300",
              "QOQNUZ_API_TRENDING_CACHE_MS": "0", "QOQNUZ_LOG_LEVEL": "warn",
              "QOQNUZ_MEDIA_DIR": os.path.join(D, "media")})
    e.update({k: str(v) for k, v in env.items()})
    log = open(os.path.join(D, name + ".log"), "ab")
    p = subprocess.Popen([os.path.join(BIN, "automation-api")], env=e, stdout=log, stderr=log)
    procs.append((name, p))
    wait_ready(port, name, p)
    return p


def start_service(name, port, **env):
    e = dict(os.environ)
    e.update({"QOQNUZ_HTTP_ADDR": "127.0.0.1:%d" % port, "QOQNUZ_PG_DSN": DSN,
              "QOQNUZ_KAFKA_BROKERS": ENV["QZ_TEST_BROKERS"],
              "QOQNUZ_REDIS_URL": ENV["QZ_TEST_REDIS_URL"],
              "QOQNUZ_SCHEMA_DIR": os.path.join(ROOT, "schemas"), "JWT_SECRET": SECRET})
    e.update(env)
    log = open(os.path.join(D, name + ".log"), "ab")
    p = subprocess.Popen([os.path.join(BIN, name)], env=e, stdout=log, stderr=log)
    procs.append((name, p))
    return p


def wait_ready(port, name, p, seconds=30):
    for _ in range(seconds * 10):
        if p.poll() is not None:
            raise RuntimeError("%s exited with %s" % (name, p.returncode))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("%s not ready on %d" % (name, port))


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.raw = status, headers, body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None


def call(port, method, path, token=None, body=None, ctype="application/json", raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None and ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            res = Resp(r.status, r.headers, r.read().decode())
    except urllib.error.HTTPError as e:
        res = Resp(e.code, e.headers, e.read().decode())
    # every answer must match the OpenAPI description of that path/method/status
    err = spec_check.validate(method, path.split("?")[0], res.status, res.json)
    if err:
        fail("%s %s -> %d does not match docs/openapi.yaml: %s\n  body: %s"
             % (method, path, res.status, err, res.raw[:300]))
    return res


def expect(res, status, what):
    return check(res.status == status, "%s: expected %d, got %d %s" % (what, status, res.status,
                                                                         res.raw[:300]))


def error_code(res, success_shape=False):
    j = res.json or {}
    if success_shape and j.get("success") is not False:
        fail("error answer without success:false: %s" % res.raw[:200])
    return (j.get("error") or {}).get("code")


def wait_for(pred, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    fail("timed out after %ss waiting for %s" % (seconds, what))
    return None


# ---------------------------------------------------------------------------------------------

def test_auth_matrix(port):
    admin, user = jwt("admin"), jwt("user")
    admin_routes = [("GET", "/api/automation/trigger", True), ("POST", "/api/automation/trending", True),
                    ("GET", "/api/automation/jobs", False), ("POST", "/api/tracks", False),
                    ("GET", "/api/automation/jobs/calculate-trending/runs", False)]
    bad = {"no token": None, "expired": jwt("admin", exp_in=-10),
           "forged": jwt("admin", secret="not-the-secret"), "alg none": jwt("admin", alg="none"),
           "HS512 under the same secret": jwt("admin", alg="HS512"), "garbage": "abc.def.ghi"}
    for method, path, succ in admin_routes:
        body = {} if method == "POST" else None
        for what, tok in bad.items():
            r = call(port, method, path, tok, body)
            expect(r, 401, "%s %s with %s" % (method, path, what))
            check(error_code(r, succ) == "unauthorized", "%s %s %s: code" % (method, path, what))
        r = call(port, method, path, user, body)
        expect(r, 403, "%s %s as user" % (method, path))
        check(error_code(r, succ) == "forbidden", "user on admin route: code forbidden")
    # a user token is fine on the user routes, not on the admin ones
    expect(call(port, "GET", "/api/automation/smart-playlists", user), 200, "user smart playlists")
    expect(call(port, "GET", "/api/automation/smart-playlists", None), 401, "no token smart playlists")
    expect(call(port, "GET", "/api/automation/trigger", admin), 200, "admin status")
    # worker secret
    for tok in (None, "wrong-secret", WORKER + "x", admin):
        r = call(port, "GET", "/api/automation/worker", tok)
        expect(r, 401, "worker GET with %r" % (tok and tok[:12]))
        r = call(port, "POST", "/api/automation/worker", tok, {"batchSize": 1})
        expect(r, 401, "worker POST with %r" % (tok and tok[:12]))
        error_code(r, True)
    expect(call(port, "GET", "/api/automation/worker", WORKER), 200, "worker GET")
    # not found / method not allowed
    expect(call(port, "GET", "/api/automation/nope", admin), 404, "unknown path")
    r = call(port, "DELETE", "/api/automation/trending", admin)
    expect(r, 405, "DELETE trending")
    check("GET" in (r.headers.get("Allow") or ""), "405 lists Allow")


def test_malformed(port):
    admin = jwt("admin")
    cases = [("POST", "/api/automation/trigger", b"{not json", "application/json", 400, True),
             ("POST", "/api/automation/trigger", b"[1,2]", "application/json", 400, True),
             ("POST", "/api/automation/trigger", b'{"task":"bogus"}', "application/json", 400, True),
             ("POST", "/api/automation/trigger", b'{"task":7}', "application/json", 400, True),
             ("POST", "/api/automation/trigger", b'{"task":"all"}', "text/plain", 415, True),
             ("POST", "/api/tracks", b'{"title":"x"}', "application/json", 400, False),
             ("POST", "/api/tracks", b"", "application/json", 400, False),
             ("PATCH", "/api/automation/jobs/calculate-trending", b'{"schedule":"61 * * * *"}',
              "application/json", 400, False),
             ("PATCH", "/api/automation/jobs/calculate-trending", b'{"schedule":"* * * *"}',
              "application/json", 400, False),
             ("PATCH", "/api/automation/jobs/calculate-trending", b'{"enabled":"yes"}',
              "application/json", 400, False),
             ("PATCH", "/api/automation/jobs/calculate-trending", b'{"owner":"me"}',
              "application/json", 400, False),
             # a typo is refused, never silently dropped
             ("POST", "/api/automation/trigger", b'{"task":"trending","Task":"all"}',
              "application/json", 400, True),
             ("PATCH", "/api/automation/jobs/calculate-trending", b'{}', "application/json", 400,
              False)]
    for method, path, raw, ctype, status, succ in cases:
        r = call(port, method, path, admin, raw=raw, ctype=ctype)
        if expect(r, status, "%s %s %r" % (method, path, raw[:40])):
            error_code(r, succ)
    # announced oversized body: answered 413 before the body is sent
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("POST /api/automation/trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (admin, 2 << 20)).encode())
    head = s.recv(4096).decode(errors="replace")
    s.close()
    check(head.startswith("HTTP/1.1 413"), "oversized body: %s" % head[:60])
    user = jwt("user")
    r = call(port, "POST", "/api/automation/smart-playlists", user, {"playlistType": "weekly_jam"})
    if expect(r, 400, "unknown playlist type"):
        check("daily_mix" in r.json["error"]["message"], "400 lists the valid types")
        error_code(r, True)
    r = call(port, "POST", "/api/automation/smart-playlists", user, {"playlistType": "artist_radio"})
    expect(r, 400, "artist_radio without artist_id")
    r = call(port, "POST", "/api/automation/smart-playlists", user,
             {"playlistType": "artist_radio", "params": {"artist_id": "nope"}})
    expect(r, 400, "artist_radio with a bad artist_id")
    r = call(port, "POST", "/api/automation/smart-playlists", user, {"playlistType": "daily_mix",
                                                                     "params": [1]})
    expect(r, 400, "params not an object")
    r = call(port, "POST", "/api/automation/smart-playlists", user, {"playlistType": "daily_mix",
                                                                     "param": {}})
    if expect(r, 400, "unknown top-level field"):
        check("unknown field 'param'" in r.json["error"]["message"], "400 names the field: %s"
              % r.raw[:200])
    # the builder's parameter names and values (docs/playlist-builder.md "Parameterised types")
    for ptype, params, what in (
            ("tempo", {"bpm": 120}, "tempo with the old name bpm"),
            ("tempo", {}, "tempo without min_bpm/max_bpm"),
            ("tempo", {"min_bpm": 10}, "min_bpm below 20"),
            ("tempo", {"min_bpm": 150, "max_bpm": 120}, "min_bpm above max_bpm"),
            ("activity", {"activity": "dancing"}, "unknown activity"),
            ("decade", {"decade": "1995"}, "not a decade"),
            ("genre_mix", {"genres": ",,"}, "no genre"),
            ("genre_mix", {"genres": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}, "9 genres"),
            ("genre_mix", {"genres": ['ro"ck']}, "quote in a genre"),
            ("mood", {"mood": "happy", "colour": "red"}, "unknown param"),
            ("daily_mix", {"limit": 0}, "limit 0"),
            ("daily_mix", {"limit": 2.5}, "limit not an integer"),
            ("track_radio", {"track_id": "x"}, "track_id not a uuid"),
            ("mood", {"mood": {"a": 1}}, "object value")):
        r = call(port, "POST", "/api/automation/smart-playlists", user,
                 {"playlistType": ptype, "params": params})
        if expect(r, 400, "smart-playlists %s" % what):
            error_code(r, True)
    r = call(port, "POST", "/api/automation/smart-playlists", user,
             {"playlistType": "tempo", "params": {"bpm": 120}})
    check("min_bpm" in (r.json or {}).get("error", {}).get("message", ""),
          "400 for an unknown param names the valid ones: %s" % r.raw[:200])
    for q in ("limit=0", "limit=101", "limit=abc", "limit=5x", "limit=-1"):
        expect(call(port, "GET", "/api/automation/trending?" + q), 400, "trending " + q)
    for q in ("limit=0", "limit=101"):
        expect(call(port, "GET", "/api/automation/jobs/calculate-trending/runs?" + q, admin), 400,
               "runs " + q)
    for b in ({"batchSize": 0}, {"batchSize": 101}, {"batchSize": "10"}, {"taskType": "x"},
              {"batchSize": 5, "batch_size": 5}):
        expect(call(port, "POST", "/api/automation/worker", WORKER, b), 400, "worker %s" % b)
    expect(call(port, "GET", "/api/automation/smart-playlists?type=weekly_jam", user), 400,
           "GET unknown type")


def redis_cmd(port, *args):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    data = s.recv(65536)
    s.close()
    return data


def test_trending(port, redis_port, redis_proc):
    genre = "apitest-%s" % uuid.uuid4().hex[:8]
    # catalog + snapshot rows of our own (unique genre, removed at the end)
    ar = psql("INSERT INTO artists (name) VALUES ('Trend Artist') RETURNING id")
    al = psql("INSERT INTO albums (artist_id, title) VALUES ('%s', 'Trend Album') RETURNING id" % ar)
    tids = [psql("INSERT INTO tracks (title, artist_id, album_id, duration_ms, genres) VALUES "
                 "('Trend %d', '%s', '%s', %d, ARRAY['%s']) RETURNING id" % (i, ar, al, 1000 * i, genre))
            for i in range(3)]
    for i, t in enumerate(tids):
        psql("INSERT INTO trending_tracks (track_id, trend_score, play_count_24h, play_count_7d, "
             "unique_listeners_24h, unique_listeners_7d) VALUES ('%s', %d, %d, %d, %d, %d)"
             % (t, 1000 + i, i, 2 * i, i, i))
    # 1. Redis has no chart (no meta): served from Postgres
    r = call(port, "GET", "/api/automation/trending?limit=100&genre=" + genre)
    if expect(r, 200, "trending without a chart in Redis"):
        check(r.headers.get("X-Trending-Source") == "postgres", "no chart -> postgres source")
        got = [t["id"] for t in r.json["tracks"]]
        check(got == list(reversed(tids)), "postgres order by score: %s" % got)
        check(r.json["total"] == 3, "total 3")
        t0 = r.json["tracks"][0]
        check(t0["artists"] == {"id": ar, "name": "Trend Artist"}, "artists object")
        check(t0["albums"] == {"id": al, "title": "Trend Album"}, "albums object")
        check(t0["trending_data"]["trend_score"] == 1002, "trend_score")
        check(t0["genres"] == [genre], "genres")
    # 2. the ranker's keys in Redis: served from Redis, in ZSET order
    redis_cmd(redis_port, "HSET", "qoqnuz:trending:meta", "calculated_at", "1737158400000",
              "window", "7d", "source", "test")
    for i, t in enumerate(tids):
        redis_cmd(redis_port, "ZADD", "qoqnuz:trending:genre:" + genre, 5000 - i, t)
        redis_cmd(redis_port, "HSET", "qoqnuz:trending:track:" + t, "title", "R%d" % i,
                  "artist_id", ar, "artist_name", "Trend Artist", "album_id", al,
                  "album_title", "Trend Album", "duration_ms", 1000 * i, "play_count_24h", 7,
                  "play_count_7d", 9, "unique_listeners_24h", 3, "unique_listeners_7d", 4,
                  "calculated_at", "1737158400000", "genres", genre)
    r = call(port, "GET", "/api/automation/trending?limit=2&genre=" + genre)
    if expect(r, 200, "trending from Redis"):
        check(r.headers.get("X-Trending-Source") == "redis", "source redis")
        check([t["id"] for t in r.json["tracks"]] == tids[:2], "redis order, limit 2")
        check(r.json["total"] == 2, "total 2")
        check(r.json["calculated_at"] == "2025-01-18T00:00:00.000Z", "calculated_at from meta")
        check(r.json["tracks"][0]["trending_data"]["play_count_7d"] == 9, "counts from hash")
        check(r.json["tracks"][0]["trending_data"]["trend_score"] == 5000, "score from zset")
    expect(call(port, "GET", "/api/automation/trending"), 200, "global trending, default limit")
    # 3. Redis down: the same request falls back to the snapshot
    redis_proc.terminate()
    redis_proc.wait()
    r = call(port, "GET", "/api/automation/trending?limit=2&genre=" + genre)
    if expect(r, 200, "trending with Redis down"):
        check(r.headers.get("X-Trending-Source") == "postgres", "redis down -> postgres")
        check([t["id"] for t in r.json["tracks"]] == list(reversed(tids))[:2], "fallback rows")
    r = call(port, "GET", "/readyz")
    check(r.status == 200, "ready without Redis (trending falls back)")
    psql("DELETE FROM trending_tracks WHERE track_id IN (%s)" % ",".join("'%s'" % t for t in tids))


def test_post_trending_and_trigger(port):
    admin = jwt("admin")
    r = call(port, "POST", "/api/automation/trending", admin)
    # no trending-ranker here: the run is queued and published, not finished
    if check(r.status in (200, 202), "POST trending: %d %s" % (r.status, r.raw[:200])):
        check(r.json["success"] is True, "POST trending success")
        run = r.json["run_id"]
        PENDING_RUNS.append(("POST trending", run))
        wait_for(lambda: psql("SELECT published_at IS NOT NULL FROM automation_job_runs "
                              "WHERE run_id='%s'" % run) == "t", 5, "trending run published")
    for task, jobs in (("listening_stats", ["aggregate-listening-history"]),
                       ("smart_playlists", ["generate-smart-playlists"]),
                       ("trending", ["calculate-trending"]),
                       ("all", ["aggregate-listening-history", "generate-smart-playlists",
                                "calculate-trending"])):
        r = call(port, "POST", "/api/automation/trigger", admin, {"task": task})
        if not expect(r, 200, "trigger " + task):
            continue
        t = r.json["tasks"][0]
        check(r.json["success"] is True and t["status"] == "success", "trigger shape")
        runs = list(t["run_ids"].values()) if task == "all" else [t["run_id"]]
        check(len(runs) == len(jobs), "one run per job for %s" % task)
        for run in runs:
            wait_for(lambda: psql("SELECT published_at IS NOT NULL FROM automation_job_runs "
                                  "WHERE run_id='%s'" % run) == "t", 3, "run %s published" % run)
            PENDING_RUNS.append(("trigger " + task, run))
    r = call(port, "GET", "/api/automation/trigger", admin)
    if expect(r, 200, "status"):
        st = r.json["automation_status"]
        names = [j["name"] for j in st["cron_jobs"]]
        check(names[:5] == ["aggregate-listening-history", "generate-smart-playlists",
                            "calculate-trending", "cleanup-background-tasks",
                            "cleanup-expired-playlists"], "cron_jobs in the guide's order")
        ct = [j for j in st["cron_jobs"] if j["name"] == "calculate-trending"][0]
        check(ct["schedule"] == "0 */6 * * *" and ct["last_run"] is not None, "job with last run")
        check(ct["next_run_at"] is not None, "scheduler computed next_run_at")
        check(set(st["background_tasks"]["by_status"]) >= {"pending", "processing", "completed",
                                                          "failed"}, "by_status keys")


def test_jobs(port):
    admin = jwt("admin")
    r = call(port, "GET", "/api/automation/jobs", admin)
    if expect(r, 200, "jobs list"):
        check(len(r.json["jobs"]) >= 7, "seven jobs")
    expect(call(port, "GET", "/api/automation/jobs/nope", admin), 404, "unknown job")
    expect(call(port, "PATCH", "/api/automation/jobs/nope", admin, {"enabled": False}), 404,
           "PATCH unknown job")
    r = call(port, "PATCH", "/api/automation/jobs/cleanup-expired-playlists", admin,
             {"schedule": "15 5 * * mon-fri", "enabled": False})
    if expect(r, 200, "PATCH job"):
        check(r.json["schedule"] == "15 5 * * mon-fri" and r.json["enabled"] is False, "patched")
    r = call(port, "PATCH", "/api/automation/jobs/cleanup-expired-playlists", admin,
             {"schedule": "0 5 * * *", "enabled": True})
    expect(r, 200, "PATCH back")
    wait_for(lambda: psql("SELECT next_run_at IS NOT NULL FROM automation_jobs WHERE "
                          "name='cleanup-expired-playlists'") == "t", 3, "next_run_at recomputed")
    r = call(port, "GET", "/api/automation/jobs/calculate-trending/runs?limit=2", admin)
    if expect(r, 200, "runs"):
        check(len(r.json["runs"]) == 2 and r.json["job"] == "calculate-trending", "two runs")
    expect(call(port, "GET", "/api/automation/jobs/nope/runs", admin), 404, "runs of unknown job")


def test_tracks(port):
    admin = jwt("admin")
    name = "Upload Artist %s" % uuid.uuid4().hex[:6]
    r = call(port, "POST", "/api/tracks", admin,
             {"title": "Uploaded", "artist_name": name, "album_title": "First",
              "duration_ms": 201000, "audio_url": "http://127.0.0.1:9/none.wav",
              "genres": ["rock", 'we"ird'], "popularity": 40, "released_at": "2024-05-01"})
    if not expect(r, 201, "POST /api/tracks"):
        return None
    tid = r.json["id"]
    check(r.json["track"]["artists"]["name"] == name, "artist created by name")
    check(r.json["track"]["genres"] == ["rock", 'we"ird'], "genres stored")
    check(psql("SELECT string_agg(task_type || ':' || priority, ',' ORDER BY priority DESC) "
               "FROM background_tasks WHERE entity_id='%s'" % tid)
          == "mood_detection:7,energy_analysis:6,genre_classification:5", "analysis tasks queued")
    wait_for(lambda: psql("SELECT published_at IS NOT NULL FROM tracks WHERE id='%s'" % tid) == "t",
             3, "track published on tracks.v1")
    # an edit makes a new version: unpublished, then published again
    psql("UPDATE tracks SET title = 'Uploaded (edit)' WHERE id='%s'" % tid)
    wait_for(lambda: psql("SELECT published_at IS NOT NULL FROM tracks WHERE id='%s'" % tid) == "t",
             3, "edited track republished")
    # same artist by id, unknown artist, bad date, user token
    ar = psql("SELECT artist_id FROM tracks WHERE id='%s'" % tid)
    expect(call(port, "POST", "/api/tracks", admin, {"title": "Second", "artist_id": ar,
                                                     "duration_ms": 1, "audio_url": "x"}), 201,
           "by artist_id")
    expect(call(port, "POST", "/api/tracks", admin, {"title": "T", "artist_id": str(uuid.uuid4()),
                                                     "duration_ms": 1, "audio_url": "x"}), 400,
           "unknown artist")
    for day in ("2023-02-30", "2023-13-01", "2023-1a-01", "0000-01-01", "2023-02-29"):
        r = call(port, "POST", "/api/tracks", admin, {"title": "T", "artist_id": ar,
                                                      "duration_ms": 1, "audio_url": "x",
                                                      "released_at": day})
        if expect(r, 400, "impossible date %s" % day):
            check("released_at must be a date" in r.raw, "the 400 names the field: %s" % r.raw[:120])
    expect(call(port, "POST", "/api/tracks", admin, {"title": "Leap", "artist_id": ar,
                                                     "duration_ms": 1, "audio_url": "x",
                                                     "released_at": "2024-02-29"}), 201, "leap day")
    expect(call(port, "POST", "/api/tracks", admin, {"title": "T", "artist_id": ar, "duration_ms": -1,
                                                     "audio_url": "x"}), 400, "negative duration")
    expect(call(port, "POST", "/api/tracks", admin, {"title": "T", "artist_id": ar, "artist_name": "x",
                                                     "duration_ms": 1, "audio_url": "x"}), 400,
           "artist_id and artist_name")
    return tid


def test_playlists(port):
    u = str(uuid.uuid4())
    user = jwt("user", sub=u)
    ar = psql("INSERT INTO artists (name) VALUES ('PL Artist') RETURNING id")
    t1 = psql("INSERT INTO tracks (title, artist_id, duration_ms) VALUES ('A', '%s', 5) RETURNING id" % ar)
    t2 = psql("INSERT INTO tracks (title, artist_id, duration_ms) VALUES ('B', '%s', 6) RETURNING id" % ar)
    psql("INSERT INTO smart_playlists (user_id, playlist_type, track_ids, expires_at) VALUES "
         "('%s', 'daily_mix', ARRAY['%s','%s']::uuid[], now() + interval '1 day'), "
         "('%s', 'new_for_you', ARRAY['%s']::uuid[], now() - interval '1 minute')" % (u, t2, t1, u, t1))
    r = call(port, "GET", "/api/automation/smart-playlists", user)
    if expect(r, 200, "GET smart playlists"):
        pl = r.json["playlists"]
        check(len(pl) == 1 and pl[0]["playlist_type"] == "daily_mix", "expired list not returned")
        check(pl[0]["track_ids"] == [t2, t1] and pl[0]["track_count"] == 2, "track ids in order")
        check([t["title"] for t in pl[0]["tracks"]] == ["B", "A"], "full tracks in order")
        check(pl[0]["tracks"][0]["artists"]["name"] == "PL Artist" and
              pl[0]["tracks"][0]["albums"] is None, "track object")
    r = call(port, "GET", "/api/automation/smart-playlists?type=new_for_you", user)
    if expect(r, 200, "GET ?type"):
        check(r.json["playlists"] == [], "type filter + expiry")
    other = call(port, "GET", "/api/automation/smart-playlists", jwt("user"))
    check(other.json == {"playlists": []}, "another user sees none")
    if "playlist-builder" not in STARTED:
        fail("no playlist-builder binary in %s: cannot check the success path" % BIN)
        return
    # a listener with plays: 12 tracks of our own genre, played over the last days
    genre = "pltest-%s" % uuid.uuid4().hex[:8]
    tracks = [psql("INSERT INTO tracks (title, artist_id, duration_ms, genres, popularity) VALUES "
                   "('G%d', '%s', 1000, ARRAY['%s'], %d) RETURNING id" % (i, ar, genre, 50 + i))
              for i in range(12)]
    psql("INSERT INTO play_history (event_id, user_id, track_id, played_at, duration_played_ms, "
         "completed) SELECT gen_random_uuid(), '%s', t, now() - (k || ' hours')::interval, 900, "
         "true FROM unnest(ARRAY[%s]::uuid[]) AS t, generate_series(1, 3) AS k"
         % (u, ",".join("'%s'" % t for t in tracks[:8])))
    for ptype, params in (("daily_mix", None), ("genre_mix", {"genres": [genre, "rock"]}),
                          ("decade", {"decade": "1990s", "limit": 10}),
                          ("tempo", {"min_bpm": 90, "max_bpm": 140})):
        body = {"playlistType": ptype}
        if params is not None:
            body["params"] = params
        r = call(port, "POST", "/api/automation/smart-playlists", user, body)
        if not expect(r, 200, "POST %s through the playlist-builder" % ptype):
            continue
        j = r.json
        check(j["success"] is True and j["playlist_type"] == ptype, "%s: success" % ptype)
        if ptype in ("daily_mix", "genre_mix"):
            check(len(j["track_ids"]) > 0, "%s: track_ids for a listener with plays" % ptype)
        if ptype == "genre_mix":
            check(set(j["track_ids"]) & set(tracks), "genre_mix picks our genre's tracks")
        row = psql("SELECT to_json(track_ids) FROM smart_playlists WHERE user_id='%s' AND "
                   "playlist_type='%s'" % (u, ptype))
        check(row and json.loads(row) == j["track_ids"], "%s: the stored list is the answer" % ptype)
    r = call(port, "GET", "/api/automation/smart-playlists?type=daily_mix", user)
    if expect(r, 200, "GET the generated daily_mix"):
        pl = r.json["playlists"]
        check(len(pl) == 1 and pl[0]["track_count"] == len(pl[0]["tracks"]) > 0,
              "generated daily_mix with full tracks")


def test_playlists_timeout(port):
    """Nobody answers (no builder yet): 504 with success false after the configured timeout."""
    user = jwt("user")
    t0 = time.time()
    r = call(port, "POST", "/api/automation/smart-playlists", user, {"playlistType": "daily_mix"})
    if expect(r, 504, "POST without a builder"):
        check(error_code(r, True) == "timeout", "timeout code")
        check(1.4 < time.time() - t0 < 5, "waited the configured 1.5 s")


def test_worker(port, tid):
    r = call(port, "GET", "/api/automation/worker", WORKER)
    if expect(r, 200, "worker status"):
        check(r.json["status"] == "healthy" and r.json["summary"]["total"] >= 3, "summary")
    r = call(port, "POST", "/api/automation/worker", WORKER, {"taskType": "genre_classification",
                                                             "batchSize": 1})
    if check(r.status in (200, 503), "worker POST: %d %s" % (r.status, r.raw[:200])):
        print("worker POST: %d %s" % (r.status, r.raw[:200]), flush=True)
        if r.status == 200:
            check(r.json["success"] is True and r.json["processed"] <= 1, "processed <= batch")
            for t in r.json["tasks"]:
                check(t["type"] == "genre_classification", "task type honoured")


def test_scheduler_replicas(ports):
    """Both replicas run the scheduler: each due time gives exactly one run."""
    job = "compute-track-similarities"
    before = int(psql("SELECT count(*) FROM automation_job_runs WHERE job='%s'" % job))
    rounds = 5
    for i in range(rounds):
        # missed many slots (3 days of downtime): one run, not one per slot
        psql("UPDATE automation_jobs SET next_run_at = now() - interval '3 days' WHERE name='%s'" % job)
        wait_for(lambda: psql("SELECT next_run_at > now() FROM automation_jobs WHERE name='%s'" % job)
                 == "t", 5, "round %d claimed" % i)
    time.sleep(1.5)  # a second claim would have happened by now
    after = int(psql("SELECT count(*) FROM automation_job_runs WHERE job='%s'" % job))
    check(after - before == rounds, "%d due times -> %d runs (want %d)" % (rounds, after - before, rounds))
    nxt = psql("SELECT to_char(next_run_at AT TIME ZONE 'UTC', 'HH24:MI') FROM automation_jobs "
               "WHERE name='%s'" % job)
    check(nxt == "01:30", "next_run_at follows the schedule 30 1 * * *: %s" % nxt)
    wait_for(lambda: psql("SELECT count(*) FROM automation_job_runs WHERE job='%s' AND "
                          "published_at IS NULL" % job) == "0", 3, "scheduled runs published")
    for run in psql("SELECT run_id FROM automation_job_runs WHERE job='%s' ORDER BY run_seq DESC "
                    "LIMIT %d" % (job, rounds)).split():
        PENDING_RUNS.append(("scheduled", run))


OWNERS = {"aggregate-listening-history": "stats-aggregator", "calculate-trending": "trending-ranker",
          "generate-smart-playlists": "playlist-builder",
          "cleanup-expired-playlists": "playlist-builder",
          "compute-track-similarities": "playlist-builder",
          "cleanup-background-tasks": "analysis-worker", "reset-stuck-tasks": "analysis-worker"}


STARTED = {}       # owner service -> (port, process)
PENDING_RUNS = []  # (what, run_id) that must reach succeeded when their owner runs


def start_owners():
    """The jobs' owners whose binaries exist: they run the runs this test queues."""
    for svc in sorted(set(OWNERS.values())):
        if os.path.exists(os.path.join(BIN, svc)):
            port = free_port()
            STARTED[svc] = (port, start_service(
                svc, port, QOQNUZ_STATS_GROUP_ID="stats-apitest-%d" % os.getpid(),
                QOQNUZ_TRENDING_GROUP_ID="trending-apitest-%d" % os.getpid(),
                # the worker is here for its jobs only: no task relay, no shared task backlog
                QOQNUZ_ANALYSIS_RELAY="false",
                QOQNUZ_ANALYSIS_GROUP_ID="analysis-apitest-%d" % os.getpid()))
    for svc, (port, p) in STARTED.items():
        wait_ready(port, svc, p, 60)
    print("owners running: %s" % (", ".join(sorted(STARTED)) or "none"), flush=True)


def check_runs_finished(seconds=40):
    """Every queued run whose owner runs here ends succeeded (one shared deadline)."""
    deadline = time.time() + seconds
    checked = 0
    for what, run in PENDING_RUNS:
        job = psql("SELECT job FROM automation_job_runs WHERE run_id='%s'" % run)
        if OWNERS.get(job) not in STARTED:
            continue
        checked += 1
        st = None
        while time.time() < deadline:
            st = psql("SELECT status FROM automation_job_runs WHERE run_id='%s' AND status IN "
                      "('succeeded','failed')" % run)
            if st:
                break
            time.sleep(0.1)
        check(st == "succeeded", "%s: run %s of %s by %s: %s (%s)" % (
            what, run, job, OWNERS[job], st or "unfinished", psql(
                "SELECT status || ': ' || coalesce(message, '') FROM automation_job_runs "
                "WHERE run_id='%s'" % run)))
    print("runs checked succeeded: %d of %d queued (the others' owners are absent)"
          % (checked, len(PENDING_RUNS)), flush=True)
    check(checked > 0 or not STARTED, "some runs were checked")
    del PENDING_RUNS[:]


def test_sql_functions():
    u = str(uuid.uuid4())
    runs = {"aggregate-listening-history": psql("SELECT aggregate_all_user_listening_history()"),
            "calculate-trending": psql("SELECT calculate_trending_tracks()"),
            "generate-smart-playlists": psql("SELECT generate_all_smart_playlists()"),
            "generate_daily_mix": psql("SELECT generate_daily_mix('%s')" % u)}
    for job in ("cleanup-expired-playlists", "cleanup-background-tasks", "reset-stuck-tasks"):
        runs["queue " + job] = psql("SELECT queue_automation_run('%s')" % job)
    allr = json.loads(psql("SELECT trigger_all_automations()"))
    runs.update({"all:" + k: v for k, v in allr.items()})
    for name, run in runs.items():
        wait_for(lambda: psql("SELECT published_at IS NOT NULL FROM automation_job_runs WHERE "
                              "run_id='%s'" % run) == "t", 3, "%s run published" % name)
        PENDING_RUNS.append(("SQL " + name, run))
    check(psql("SELECT count(*) FROM cron.job_run_details WHERE command LIKE "
               "'SELECT generate_daily_mix(%%%s%%'" % u) == "1", "cron.job_run_details shows it")


def main():
    # our own Redis, so we can kill it; keys in it are ours alone
    rport = free_port()
    rdir = os.path.join(D, "redis")
    os.makedirs(rdir, exist_ok=True)
    redis_proc = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", rdir],
                                  stdout=subprocess.DEVNULL)
    procs.append(("redis", redis_proc))
    p1, p2 = free_port(), free_port()
    a = start_api("api1", p1, QOQNUZ_REDIS_URL="redis://127.0.0.1:%d/0" % rport)
    # api2 waits like production would: the fan-out this test triggers queues a request per
    # active user of the shared database ahead of ours; api1 keeps 1.5 s for the 504 check.
    start_api("api2", p2, QOQNUZ_REDIS_URL="redis://127.0.0.1:%d/0" % rport,
              QOQNUZ_API_PLAYLIST_TIMEOUT_MS=60000)
    steps = [("auth", lambda: test_auth_matrix(p1)), ("malformed", lambda: test_malformed(p1)),
             ("playlist timeout", lambda: test_playlists_timeout(p1)),
             ("start owners", start_owners),
             ("trigger", lambda: test_post_trending_and_trigger(p1)),
             ("jobs", lambda: test_jobs(p1)),
             ("scheduler", lambda: test_scheduler_replicas([p1, p2])),
             ("sql functions", test_sql_functions),
             ("playlists", lambda: test_playlists(p2)),
             ("runs finished", check_runs_finished)]
    tid = None
    for name, fn in steps:
        t0 = time.time()
        fn()
        print("-- %s done (%.1fs, %d failures so far)" % (name, time.time() - t0, failures), flush=True)
    tid = test_tracks(p1)
    test_worker(p1, tid)
    test_trending(p1, rport, redis_proc)
    # clean stop on SIGTERM
    for name, p in procs:
        if name.startswith("api"):
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(20)
            except subprocess.TimeoutExpired:
                rc = "timeout"
            check(rc == 0, "%s exit status on SIGTERM: %s" % (name, rc))
    print("-- spec coverage: %s" % spec_check.coverage(), flush=True)


try:
    main()
except Exception as e:  # a crash is a failure with its cause
    import traceback
    traceback.print_exc()
    failures += 1
finally:
    for name, p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if failures:
        for f in sorted(os.listdir(D)):
            if f.endswith(".log"):
                print("--- %s (tail)" % f)
                with open(os.path.join(D, f), errors="replace") as fh:
                    print("".join(fh.readlines()[-15:]))
print("automation_api_e2e: %s" % ("FAILED (%d)" % failures if failures else "ok"))
sys.exit(1 if failures else 0)

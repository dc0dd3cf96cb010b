#!/usr/bin/python3
"""trending_oracle.py - trending-ranker end to end against an SQL oracle over play_history.

Random plays (with player retries repeating event ids, and late plays) enter through the real
path: play-ingestor -> plays.v1 -> stats-aggregator -> play_history. Half are stored before the
ranker starts (it rebuilds them from play_history and replays the topic: the overlap must be
deduplicated), half stream in afterwards. "now" is pinned (QOQNUZ_TRENDING_NOW_MS, an hour
boundary 60 days back, so other tests' plays are far in the ranker's future and ignored).
Checks: Redis global/genre lists, track hashes (with genres) and meta, and trending_tracks equal
the oracle; FLUSHDB (a Redis restart) -> lists reappear; Postgres down (the ranker reaches it
through a proxy this test cuts) -> Redis keeps following the stream, the snapshot fails, retries
and recovers; a restart restores the checkpoint (no rebuild) and consumes from its offsets,
including plays sent while the ranker was down; 3 instances give the same Redis lists as 1;
the calculate-trending job (qoqnuzctl job run -> qz_jobs_enqueue) succeeds and rewrites the
table; an instance killed -> exact; SIGTERM -> exit 0."""
import json, os, random, signal, socket, subprocess, sys, threading, time, urllib.request, uuid

ENV = os.environ
for v in ("QZ_TEST_PG_DSN", "QZ_TEST_REDIS_URL", "QZ_TEST_BROKERS", "QZ_TEST_BIN", "QZ_TEST_TMP"):
    if not ENV.get(v):
        sys.exit(f"FAIL: {v} not set")
BIN, TMP, DSN = ENV["QZ_TEST_BIN"], ENV["QZ_TEST_TMP"], ENV["QZ_TEST_PG_DSN"]
REDIS = ENV["QZ_TEST_REDIS_URL"].rsplit("/", 1)[0]
RHOST, RPORT = REDIS[len("redis://"):].split(":")
H = 3600 * 1000
# An hour boundary 200 days back: inside the ingestor's 365-day horizon and clear of other
# tests' plays (the stats test spreads its plays over the last 60 days, demo data over 120),
# which share plays.v1 and play_history with this one. Some tests write fixed dates (e.g.
# it_stats_store, spread over 231 days), so the first candidate whose window (7 d
# back, 1 d ahead, with a day of margin) holds no play in play_history is taken.
def clear_now():
    base = int(time.time() * 1000) // H * H
    for days in (200, 220, 180, 240, 160, 260, 280, 300, 320, 340, 140):
        now = base - days * 24 * H
        n = subprocess.run(["psql", ENV["QZ_TEST_PG_DSN"], "-Atqc",
                            "SELECT count(*) FROM play_history WHERE played_at BETWEEN "
                            f"to_timestamp({(now - 9 * 24 * H) / 1000}) AND "
                            f"to_timestamp({(now + 2 * 24 * H) / 1000})"],
                           check=True, capture_output=True, text=True).stdout.strip()
        if n == "0":
            return now
    return base - 200 * 24 * H


NOW = clear_now()
RUN = uuid.uuid4().hex[:8]
procs = []
failed = False


def fail(msg):
    print("FAIL:", msg)
    for name, p, log in procs:
        print(f"--- {name} log (tail)")
        with open(log) as f:
            print("".join(f.readlines()[-15:]))
    cleanup()
    sys.exit(1)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(name, binary, env):
    port = free_port()
    log = f"{TMP}/trend-{RUN}-{name}.log"
    e = dict(ENV, QOQNUZ_HTTP_ADDR=f"127.0.0.1:{port}", QOQNUZ_KAFKA_BROKERS=ENV["QZ_TEST_BROKERS"],
             QOQNUZ_PG_DSN=DSN)
    e.update(env)  # env may override the DSN
    p = subprocess.Popen([f"{BIN}/{binary}"], env=e, stdout=open(log, "a"), stderr=subprocess.STDOUT)
    procs.append((name, p, log))
    return p, port


def wait_ready(port, secs=40):
    end = time.time() + secs
    while time.time() < end:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


def stop(p, name):
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        fail(f"{name} did not stop on SIGTERM")
    if rc != 0:
        fail(f"{name} exited {rc} on SIGTERM")


def cleanup():
    for _, p, _ in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def psql(sql):
    return subprocess.run(["psql", DSN, "-Atq", "-v", "ON_ERROR_STOP=1", "-F", "|", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def rcli(db, *args):
    return subprocess.run(["redis-cli", "-h", RHOST, "-p", RPORT, "-n", str(db), *args],
                          check=True, capture_output=True, text=True).stdout.strip()


class PgProxy:
    """TCP proxy to Postgres that the test can cut (down) and restore (up)."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.conns, self.lsock, self.lock = [], None, threading.Lock()
        self.up()

    def up(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(16)
        threading.Thread(target=self._accept, args=(self.lsock,), daemon=True).start()

    def down(self):
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept thread; close alone does not
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns = []

    def _accept(self, ls):
        while True:
            try:
                a, _ = ls.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    def _pipe(self, x, y):
        try:
            while (d := x.recv(65536)):
                y.sendall(d)
        except OSError:
            pass
        for s_ in (x, y):
            try:
                s_.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def metric(port, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(l.split()[-1]) for l in body.splitlines()
               if l.startswith(name + " ") or l.startswith(name + "{"))


# ---- catalog: artists, albums, tracks with genres -------------------------------------------
random.seed(42)
GENRES = ["rock", "jazz", "pop", "hip hop"]
artist = str(uuid.uuid4())
album = str(uuid.uuid4())
tracks = [str(uuid.uuid4()) for _ in range(40)]
track_genres = {t: random.sample(GENRES, random.randint(0, 2)) for t in tracks}
rows = ",".join(
    "('%s','Song %d','%s','%s',%d,'{%s}')" % (t, i, artist, album, 1000 + i,
                                             ",".join('"%s"' % g for g in track_genres[t]))
    for i, t in enumerate(tracks[:36]))  # 4 tracks stay unknown to the catalog
psql(f"INSERT INTO artists (id, name) VALUES ('{artist}', 'Band {RUN}');"
     f"INSERT INTO albums (id, artist_id, title) VALUES ('{album}', '{artist}', 'LP {RUN}');"
     f"INSERT INTO tracks (id, title, artist_id, album_id, duration_ms, genres) VALUES {rows};")

# ---- plays ----------------------------------------------------------------------------------
users = [str(uuid.uuid4()) for _ in range(120)]
plays = []
for i in range(2400):
    t = tracks[min(int(random.expovariate(0.12)), len(tracks) - 1)]
    age = random.choice([random.randint(0, 24 * H), random.randint(0, 8 * 24 * H)])
    plays.append({"event_id": str(uuid.uuid4()), "user_id": random.choice(users), "track_id": t,
                  "played_at": NOW - age})
# exact edges: on the 24 h and 7 d boundaries
plays.append({"event_id": str(uuid.uuid4()), "user_id": users[0], "track_id": tracks[0],
              "played_at": NOW - 24 * H})
plays.append({"event_id": str(uuid.uuid4()), "user_id": users[1], "track_id": tracks[0],
              "played_at": NOW - 7 * 24 * H})
random.shuffle(plays)
first, second = plays[:1200], plays[1200:]
retries = random.sample(first, 150) + random.sample(second, 150)  # same event ids again


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def post(port, batch, token):
    for i in range(0, len(batch), 400):
        body = json.dumps([dict(p, played_at=iso(p["played_at"]), duration_played_ms=1000,
                                completed=True, source="album", device_type="web")
                           for p in batch[i:i + 400]]).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/plays", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer " + token})
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status != 202:
                fail(f"ingest answered {r.status}")


def wait_history(n):
    ids = "','".join(u for u in users)
    for _ in range(300):
        if int(psql(f"SELECT count(*) FROM play_history WHERE user_id IN ('{ids}')")) == n:
            return
        time.sleep(0.2)
    fail(f"play_history did not reach {n} plays")


token = subprocess.run([f"{BIN}/qoqnuzctl", "token", "--role", "service"], env=dict(ENV, JWT_SECRET="tr-secret"),
                       check=True, capture_output=True, text=True).stdout.strip()
ing, ing_port = start("ingestor", "play-ingestor", {"JWT_SECRET": "tr-secret",
                                                      "QOQNUZ_INGEST_HORIZON_DAYS": "3650"})
agg, agg_port = start("aggregator", "stats-aggregator", {"QOQNUZ_STATS_GROUP_ID": f"stats-tr-{RUN}"})
if not wait_ready(ing_port) or not wait_ready(agg_port):
    fail("ingestor/aggregator not ready")
post(ing_port, first, token)
wait_history(len(first))
print("ok: first half stored in play_history")

# ---- the oracle: the guide's SQL over play_history at the pinned now -------------------------
ORACLE = f"""
WITH p AS (SELECT * FROM play_history
           WHERE user_id IN ('{"','".join(users)}')
             AND played_at >= to_timestamp({NOW}/1000.0) - interval '7 days'),
c AS (SELECT track_id,
             count(*) FILTER (WHERE played_at >= to_timestamp({NOW}/1000.0) - interval '24 hours') p24,
             count(*) p7,
             count(DISTINCT user_id) FILTER (WHERE played_at >= to_timestamp({NOW}/1000.0) - interval '24 hours') l24,
             count(DISTINCT user_id) l7
      FROM p GROUP BY track_id HAVING count(*) >= 3)
SELECT track_id, 10*p24 + 2*p7 + 20*l24 + 5*l7, p24, p7, l24, l7 FROM c
ORDER BY 2 DESC, 1"""


def oracle():
    out = {}
    for line in psql(ORACLE).splitlines():
        t, s, a, b, c, d = line.split("|")
        out[t] = (float(s), int(a), int(b), int(c), int(d))
    return out


def redis_global(db):
    vals = rcli(db, "ZREVRANGE", "qoqnuz:trending:global", "0", "-1", "WITHSCORES").splitlines()
    return {vals[i]: float(vals[i + 1]) for i in range(0, len(vals), 2)}


RANKER_ENV = {"QOQNUZ_TRENDING_NOW_MS": str(NOW), "QOQNUZ_TRENDING_PUBLISH_MS": "200",
              "QOQNUZ_TRENDING_SNAPSHOT_MS": "300", "QOQNUZ_TRENDING_JOBS": "false"}
import urllib.parse
_u = urllib.parse.urlsplit(DSN)
proxy = PgProxy(_u.port)
PROXY_DSN = urllib.parse.urlunsplit(_u._replace(netloc=_u.netloc.rsplit(":", 1)[0] + f":{proxy.port}"))
R1_ENV = dict(RANKER_ENV, QOQNUZ_TRENDING_GROUP_ID=f"tr-one-{RUN}", QOQNUZ_REDIS_URL=f"{REDIS}/1",
              QOQNUZ_PG_DSN=PROXY_DSN, QOQNUZ_TRENDING_CHECKPOINT_MS="500")
r1, r1_port = start("ranker-1", "trending-ranker", R1_ENV)
if not wait_ready(r1_port, 60):
    fail("ranker not ready")
post(ing_port, second + retries, token)
wait_history(len(plays))
print("ok: second half and 300 retries posted; play_history has every play once")

want = oracle()
if not want:
    fail("empty oracle")


def converge(db, what):
    got = None
    for _ in range(150):
        got = redis_global(db)
        if got == {t: v[0] for t, v in want.items()}:
            return
        time.sleep(0.2)
    missing = {t: v for t, v in want.items() if got.get(t) != v[0]}
    fail(f"{what}: Redis global list differs from the oracle: {len(missing)} tracks differ, "
         f"e.g. {list(missing.items())[:3]}; got {list(got.items())[:3]}")


converge(1, "one instance")
print(f"ok: Redis global list equals the SQL oracle ({len(want)} tracks)")

# track hashes with counts and catalog fields; genre lists; meta
for t, (s, p24, p7, l24, l7) in want.items():
    h = rcli(1, "HGETALL", f"qoqnuz:trending:track:{t}").splitlines()
    h = dict(zip(h[::2], h[1::2]))
    if (float(h["trend_score"]), int(h["play_count_24h"]), int(h["play_count_7d"]),
            int(h["unique_listeners_24h"]), int(h["unique_listeners_7d"])) != (s, p24, p7, l24, l7):
        fail(f"track hash {t} differs: {h} vs {(s, p24, p7, l24, l7)}")
    if json.loads(h["genres"]) != (track_genres[t] if t in tracks[:36] else []):
        fail(f"track hash {t}: genres {h['genres']} vs {track_genres.get(t)}")
    if t in tracks[:36]:
        if h["title"] != f"Song {tracks.index(t)}" or h["artist_name"] != f"Band {RUN}" or \
                h["album_title"] != f"LP {RUN}" or h["duration_ms"] != str(1000 + tracks.index(t)):
            fail(f"track hash {t} lacks catalog fields: {h}")
for g in GENRES:
    exp = [t for t in want if t in tracks[:36] and g in track_genres[t]]
    got = rcli(1, "ZREVRANGE", f"qoqnuz:trending:genre:{g}", "0", "-1").splitlines()
    if sorted(got) != sorted(exp):
        fail(f"genre {g}: {got} vs {exp}")
meta = rcli(1, "HGETALL", "qoqnuz:trending:meta").splitlines()
meta = dict(zip(meta[::2], meta[1::2]))
if meta.get("source") != "stream" or not meta.get("calculated_at", "").startswith(iso(NOW)[:19]):
    fail(f"meta: {meta}")
print("ok: track hashes, genre lists and meta match")

# Postgres snapshot (top 100 of the oracle)
for _ in range(50):
    pg = psql("SELECT track_id, trend_score, play_count_24h, play_count_7d, unique_listeners_24h, "
              "unique_listeners_7d FROM trending_tracks ORDER BY trend_score DESC, track_id")
    got = {l.split("|")[0]: (float(l.split("|")[1]), *map(int, l.split("|")[2:]))
           for l in pg.splitlines()}
    if got == want:
        break
    time.sleep(0.2)
else:
    fail(f"trending_tracks differs from the oracle: {len(got)} rows vs {len(want)}")
fresh = psql("SELECT calculated_at FROM trending_tracks LIMIT 1")  # the guide's freshness query
if not fresh:
    fail("freshness query returned nothing")
print("ok: trending_tracks equals the oracle; the guide's freshness query works")

# Redis restart: everything gone -> the lists reappear
rcli(1, "FLUSHDB")
converge(1, "after FLUSHDB")
print("ok: lists reappear after Redis lost its data")

def more_plays(n, nretry):
    extra = []
    for _ in range(n):
        t = tracks[min(int(random.expovariate(0.12)), len(tracks) - 1)]
        extra.append({"event_id": str(uuid.uuid4()), "user_id": random.choice(users), "track_id": t,
                      "played_at": NOW - random.randint(0, 8 * 24 * H)})
    plays.extend(extra)
    post(ing_port, extra + random.sample(plays, nretry), token)
    wait_history(len(plays))


def table_equals_oracle(secs):
    got = {}
    for _ in range(int(secs * 5)):
        pg = psql("SELECT track_id, trend_score, play_count_24h, play_count_7d, "
                  "unique_listeners_24h, unique_listeners_7d FROM trending_tracks")
        got = {l.split("|")[0]: (float(l.split("|")[1]), *map(int, l.split("|")[2:]))
               for l in pg.splitlines()}
        if got == want:
            return True
        time.sleep(0.2)
    return False


# Postgres down (for the ranker only): Redis keeps updating, the snapshot fails and recovers
proxy.down()
fails0 = metric(r1_port, "qz_trending_snapshot_failures_total")
more_plays(300, 50)
want = oracle()
converge(1, "Postgres down")
time.sleep(1.5)
if metric(r1_port, "qz_trending_snapshot_failures_total") <= fails0:
    fail("Postgres down: no snapshot failure counted")
if table_equals_oracle(0.2):
    fail("Postgres down: trending_tracks already has the new ranking?")
proxy.up()
if not table_equals_oracle(15):
    fail("Postgres back: trending_tracks did not catch up with the oracle")
print("ok: Postgres down -> Redis kept following the stream; the snapshot failed, retried and recovered")

# restart without loss: plays sent while the ranker is down, then a restore from the checkpoint
time.sleep(1.2)  # one more checkpoint after the last batch (500 ms interval)
stop(r1, "ranker-1")
more_plays(200, 40)
want = oracle()
rcli(1, "FLUSHDB")
t0 = time.time()
r1, r1_port = start("ranker-1b", "trending-ranker", dict(R1_ENV, QOQNUZ_TRENDING_SNAPSHOT_MS="3600000"))
if not wait_ready(r1_port, 60):
    fail("restarted ranker not ready")
converge(1, "after a restart")
if metric(r1_port, "qz_trending_restored_plays_total") <= 0 or \
        metric(r1_port, "qz_trending_rebuilt_plays_total") != 0:
    fail("restart did not restore from the checkpoint (or rebuilt from play_history)")
print(f"ok: restart restored {metric(r1_port, 'qz_trending_restored_plays_total'):.0f} plays from "
      f"the checkpoint in {metric(r1_port, 'qz_trending_restore_seconds'):.3f} s, no rebuild, and "
      f"consumed the plays sent while down: lists equal the oracle ({time.time() - t0:.1f} s to converge)")

# three instances in another group, on another Redis db: same lists
multi = []
for i in range(3):
    p, port = start(f"ranker-m{i}", "trending-ranker",
                    dict(RANKER_ENV, QOQNUZ_TRENDING_GROUP_ID=f"tr-multi-{RUN}",
                         QOQNUZ_REDIS_URL=f"{REDIS}/2", QOQNUZ_TRENDING_SNAPSHOT_MS="3600000",
                         QOQNUZ_TRENDING_JOBS="true", QOQNUZ_TRENDING_CHECKPOINT_MS="500"))
    multi.append((p, port))
for p, port in multi:
    if not wait_ready(port, 60):
        fail("multi-instance ranker not ready")
converge(2, "three instances")
if redis_global(2) != redis_global(1):
    fail("three instances differ from one")
print("ok: three instances publish the same lists as one")

# the calculate-trending job through common/jobs (qoqnuzctl job run = qz_jobs_enqueue); it
# lands on any of the three, merger or not
psql("DELETE FROM trending_tracks")
job = subprocess.run([f"{BIN}/qoqnuzctl", "job", "run", "calculate-trending", "--wait", "30"],
                     env=dict(ENV, QOQNUZ_PG_DSN=DSN, QOQNUZ_KAFKA_BROKERS=ENV["QZ_TEST_BROKERS"]),
                     capture_output=True, text=True)
if job.returncode != 0 or '"succeeded"' not in job.stdout:
    fail(f"calculate-trending job: rc {job.returncode}: {job.stdout} {job.stderr}")
if not table_equals_oracle(2):
    fail("calculate-trending job: trending_tracks differs from the oracle")
print("ok: calculate-trending job succeeded and rewrote trending_tracks (equals the oracle)")

# an instance dies: its partitions move, the result stays exact
multi[0][0].kill()
multi[0][0].wait()
time.sleep(8)
converge(2, "after an instance died")
print("ok: an instance died; the others took its partitions, lists still exact")

for (p, _), n in zip(multi[1:], ("m1", "m2")):
    stop(p, n)
stop(r1, "ranker-1")
stop(agg, "aggregator")
stop(ing, "ingestor")
psql(f"DELETE FROM trending_checkpoint_plays WHERE group_id LIKE 'tr-%-{RUN}';"
     f"DELETE FROM trending_checkpoints WHERE group_id LIKE 'tr-%-{RUN}'")
for name, p, log in procs:
    if "runtime error:" in open(log).read() or "Sanitizer" in open(log).read():
        fail(f"{name}: sanitizer report")
print("ok: rankers stop cleanly on SIGTERM")

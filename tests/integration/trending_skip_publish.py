#!/usr/bin/python3
"""trending_skip_publish.py - the trending-ranker's skipped publish with a moving clock.

An unchanged ranking is not rewritten: only meta.calculated_at moves, by compare-and-set on the
value the ranker wrote last (docs/trending-ranker.md). Existing tests pin "now", so there the
skip writes the same time again. Here "now" starts 10 s before an hour boundary (250 days back,
clear of every other test's plays) and moves with the clock (QOQNUZ_TRENDING_NOW_MOVES), and
play_history holds plays that leave the 24 h and the 7 d window at that boundary. Checks:
  - before the boundary: the lists equal the SQL oracle at that time; with no input, meta's
    calculated_at moves on while the lists and the track hashes (their calculated_at too) stay
    as written: the publish was skipped;
  - at the boundary, with still no input, the ranking changes (the bucket moved): a full publish
    whose lists equal the oracle at the new time;
  - meta.calculated_at changed behind the ranker's back (compare-and-set fails) -> full publish;
  - FLUSHDB -> the lists reappear;  SIGTERM -> exit 0."""
import datetime, os, signal, socket, subprocess, sys, time, urllib.request, uuid

ENV = os.environ
for v in ("QZ_TEST_PG_DSN", "QZ_TEST_REDIS_URL", "QZ_TEST_BROKERS", "QZ_TEST_BIN", "QZ_TEST_TMP"):
    if not ENV.get(v):
        sys.exit(f"FAIL: {v} not set")
BIN, TMP, DSN = ENV["QZ_TEST_BIN"], ENV["QZ_TEST_TMP"], ENV["QZ_TEST_PG_DSN"]
REDIS = ENV["QZ_TEST_REDIS_URL"].rsplit("/", 1)[0]
RHOST, RPORT = REDIS[len("redis://"):].split(":")
DB = "5"
H = 3600 * 1000
B = (int(time.time() * 1000) // H - 250 * 24) * H  # the hour boundary the clock crosses
LEAD_MS = 10000  # "now" starts this long before B: room for start-up and the skipped publishes
RUN = uuid.uuid4().hex[:8]
proc = None
LOG = f"{TMP}/trend-skip-{RUN}.log"


def fail(msg):
    print("FAIL:", msg)
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with open(LOG) as f:
            print("--- ranker log (tail)\n" + "".join(f.readlines()[-15:]))
    sys.exit(1)


def psql(sql):
    return subprocess.run(["psql", DSN, "-Atq", "-v", "ON_ERROR_STOP=1", "-F", "|", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def rcli(*args):
    return subprocess.run(["redis-cli", "-h", RHOST, "-p", RPORT, "-n", DB, *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def ms_of(iso):
    return int(datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat()


# Plays around the boundary (u = user, offsets from B). Before B the window's current bucket is
# the hour before B, so the 24 h window starts at B - 25 h and the 7 d one at B - 169 h; from B
# on they start at B - 24 h and B - 168 h.
t = {k: str(uuid.uuid4()) for k in "ABCD"}
u = [str(uuid.uuid4()) for _ in range(11)]
M = 60 * 1000
plays = [
    # A: three listeners leave the 24 h window at B, one stays
    (u[1], t["A"], -24 * H - 30 * M), (u[2], t["A"], -24 * H - 30 * M),
    (u[3], t["A"], -24 * H - 30 * M), (u[4], t["A"], -2 * H),
    # B: one listener, three plays inside 24 h either way
    (u[1], t["B"], -3 * H), (u[1], t["B"], -2 * H), (u[1], t["B"], -1 * H),
    # C: leaves the 7 d window entirely at B
    (u[5], t["C"], -168 * H - 30 * M), (u[6], t["C"], -168 * H - 30 * M),
    (u[7], t["C"], -168 * H - 30 * M),
    # D: u8 plays on both sides of the 24 h edge (stays a 24 h listener), u9 only before it
    (u[8], t["D"], -24 * H - 20 * M), (u[8], t["D"], -3 * H), (u[9], t["D"], -24 * H - 10 * M),
    (u[10], t["D"], -5 * H),
]
psql("INSERT INTO play_history (event_id, user_id, track_id, played_at) VALUES " + ", ".join(
    f"('{uuid.uuid4()}', '{us}', '{tr}', to_timestamp({(B + off) / 1000.0}))" for us, tr, off in plays))


def oracle(lo24, lo7):
    """The guide's counts over play_history with the windows starting at lo24 / lo7 (ms)."""
    out = {}
    for line in psql(f"""
        WITH p AS (SELECT * FROM play_history WHERE played_at >= to_timestamp({lo7}/1000.0)
                     AND played_at < to_timestamp({B + 24 * H}/1000.0)),
        c AS (SELECT track_id,
                count(*) FILTER (WHERE played_at >= to_timestamp({lo24}/1000.0)) p24, count(*) p7,
                count(DISTINCT user_id) FILTER (WHERE played_at >= to_timestamp({lo24}/1000.0)) l24,
                count(DISTINCT user_id) l7
              FROM p GROUP BY track_id HAVING count(*) >= 3)
        SELECT track_id, 10*p24 + 2*p7 + 20*l24 + 5*l7 FROM c""").splitlines():
        k, s = line.split("|")
        out[k] = float(s)
    return out


BEFORE = oracle(B - 25 * H, B - 169 * H)
AFTER = oracle(B - 24 * H, B - 168 * H)
# the fixture does what it says: the boundary changes A and D, drops C, keeps B
if not (t["C"] in BEFORE and t["C"] not in AFTER and BEFORE[t["B"]] == AFTER[t["B"]]
        and BEFORE[t["A"]] > AFTER[t["A"]] and BEFORE[t["D"]] > AFTER[t["D"]]):
    fail(f"fixture: before {BEFORE} after {AFTER}")


def glist():
    v = rcli("ZREVRANGE", "qoqnuz:trending:global", "0", "-1", "WITHSCORES").splitlines()
    return {v[i]: float(v[i + 1]) for i in range(0, len(v), 2)}


def meta_ms():
    c = rcli("HGET", "qoqnuz:trending:meta", "calculated_at")
    try:
        return ms_of(c)
    except ValueError:
        return None


def track_calc(track):
    return rcli("HGET", f"qoqnuz:trending:track:{track}", "calculated_at")


def wait_for(cond, secs, what):
    end = time.time() + secs
    while time.time() < end:
        r = cond()
        if r:
            return r
        time.sleep(0.05)
    fail(what)


rcli("FLUSHDB")
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
env = dict(ENV, QOQNUZ_HTTP_ADDR=f"127.0.0.1:{port}", QOQNUZ_KAFKA_BROKERS=ENV["QZ_TEST_BROKERS"],
           QOQNUZ_PG_DSN=DSN, QOQNUZ_REDIS_URL=f"{REDIS}/{DB}",
           QOQNUZ_TRENDING_GROUP_ID=f"tr-skip-{RUN}", QOQNUZ_TRENDING_NOW_MS=str(B - LEAD_MS),
           QOQNUZ_TRENDING_NOW_MOVES="true", QOQNUZ_TRENDING_PUBLISH_MS="100",
           QOQNUZ_TRENDING_REFRESH_MS="600000", QOQNUZ_TRENDING_SNAPSHOT_MS="86400000",
           QOQNUZ_TRENDING_JOBS="false")
proc = subprocess.Popen([f"{BIN}/trending-ranker"], env=env, stdout=open(LOG, "a"),
                        stderr=subprocess.STDOUT)

# 1. before the boundary: the full publish of the rebuilt window
wait_for(lambda: glist() == BEFORE, LEAD_MS / 1000, "lists never equalled the oracle before the boundary")
c1 = meta_ms()
if c1 is None or c1 >= B:
    fail(f"first publish at {c1}, not before the boundary {B} (start-up took too long?)")
hashes = {k: track_calc(t[k]) for k in "ABCD"}
print(f"ok: before the boundary the lists equal the oracle ({len(BEFORE)} tracks)")

# 2. no input: meta.calculated_at moves, nothing else is written
c3 = wait_for(lambda: (lambda m: m if m and m >= c1 + 250 else None)(meta_ms()), 3,
              "meta.calculated_at did not move with the clock")
if c3 >= B:
    fail("the boundary came before the skipped publishes could be observed")
if glist() != BEFORE:
    fail("lists changed with no input before the boundary")
now_hashes = {k: track_calc(t[k]) for k in "ABCD"}
if now_hashes != hashes:
    fail(f"track hashes were rewritten by a skipped publish: {hashes} -> {now_hashes}")
print(f"ok: unchanged ranking: meta.calculated_at moved {c3 - c1} ms, lists and hashes untouched")

# 3. the clock crosses the boundary with still no input: a full publish of the new ranking
wait_for(lambda: (lambda m: m and m >= B)(meta_ms()) and glist() == AFTER, (B - c3) / 1000 + 5,
         f"after the boundary the lists did not become the oracle's: {glist()} vs {AFTER}")
for k in "ABD":
    c = track_calc(t[k])
    if not c or ms_of(c) < B:
        fail(f"track {k}'s hash not rewritten at the boundary: calculated_at {c}")
h = rcli("HGETALL", f"qoqnuz:trending:track:{t['A']}").splitlines()
h = dict(zip(h[::2], h[1::2]))
if (h.get("play_count_24h"), h.get("play_count_7d"), h.get("unique_listeners_24h"),
        h.get("unique_listeners_7d")) != ("1", "4", "1", "4"):
    fail(f"track A after the boundary: {h}")
print("ok: the bucket change with no input published the new ranking (A and D lost 24 h plays, "
      "C left the 7 d window)")

# 4. meta written by someone else: the compare-and-set fails and the ranker publishes in full
before_b = track_calc(t["B"])
rcli("HSET", "qoqnuz:trending:meta", "calculated_at", "someone-else")
wait_for(lambda: (lambda c: c and c != before_b)(track_calc(t["B"])) and meta_ms(), 3,
         "meta overwritten by another writer did not lead to a full publish")
if glist() != AFTER:
    fail("lists differ after the full publish")
print("ok: a foreign meta.calculated_at fails the compare-and-set: full publish")

# 5. Redis flushed: the lists reappear
rcli("FLUSHDB")
wait_for(lambda: glist() == AFTER and meta_ms(), 3, "lists did not reappear after FLUSHDB")
print("ok: after FLUSHDB the lists reappear")

proc.send_signal(signal.SIGTERM)
try:
    rc = proc.wait(20)
except subprocess.TimeoutExpired:
    fail("no exit within 20 s of SIGTERM")
if rc != 0:
    fail(f"exit {rc} after SIGTERM")
print("ok: SIGTERM -> exit 0")
print("PASS")

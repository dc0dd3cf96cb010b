/* main.c - dev-broker: librdkafka's mock cluster behind a fixed bootstrap port, for dev and tests.
 *
 * Start order: mock cluster with DESIGN.md's topics, bootstrap forwarder and
 * control listeners, then <run dir>/kafka.bootstrap (written last, atomically:
 * its presence means "ready"), then one "up" line and the poll() loop.
 * SIGINT/SIGTERM: close listeners, remove the file, destroy the cluster. */
#include "devbroker.h"
#include "log.h"
#include "sig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_SLOTS 1024

struct options {
        const char *host;
        long port, control_port, brokers;
        const char *run_dir;
};

static void usage(void)
{
        fprintf(stderr,
                "usage: dev-broker [--port N] [--control-port N] [--run-dir DIR] [--brokers N] "
                "[--host IPV4]\n"
                "  --port          bootstrap port (QOQNUZ_BROKER_PORT, default 59092)\n"
                "  --control-port  control port (QOQNUZ_BROKER_CONTROL_PORT, default 59093)\n"
                "  --run-dir       where kafka.bootstrap is written (QOQNUZ_RUN_DIR, default .)\n"
                "  --brokers       mock broker count (default 3)\n"
                "  --host          listen address (default 127.0.0.1)\n");
}

static int parse_long(const char *name, const char *s, long min, long max, long *out)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max) {
                fprintf(stderr, "%s: bad value '%s': expected %ld..%ld\n", name, s, min, max);
                return -1;
        }
        *out = v;
        return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
        const char *env;
        o->host = "127.0.0.1";
        o->port = 59092;
        o->control_port = 59093;
        o->brokers = 3;
        o->run_dir = ".";
        if ((env = getenv("QOQNUZ_BROKER_PORT")) &&
            parse_long("QOQNUZ_BROKER_PORT", env, 1, 65535, &o->port) != 0)
                return -1;
        if ((env = getenv("QOQNUZ_BROKER_CONTROL_PORT")) &&
            parse_long("QOQNUZ_BROKER_CONTROL_PORT", env, 1, 65535, &o->control_port) != 0)
                return -1;
        if ((env = getenv("QOQNUZ_RUN_DIR")) && *env)
                o->run_dir = env;
        for (int i = 1; i < argc; i++) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int rc = 0;
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage();
                        exit(0);
                }
                if (!v) {
                        fprintf(stderr, "%s: missing value\n", argv[i]);
                        return -1;
                }
                if (strcmp(argv[i], "--port") == 0)
                        rc = parse_long("--port", v, 1, 65535, &o->port);
                else if (strcmp(argv[i], "--control-port") == 0)
                        rc = parse_long("--control-port", v, 1, 65535, &o->control_port);
                else if (strcmp(argv[i], "--brokers") == 0)
                        rc = parse_long("--brokers", v, 1, DB_MAX_BROKERS, &o->brokers);
                else if (strcmp(argv[i], "--run-dir") == 0)
                        o->run_dir = v;
                else if (strcmp(argv[i], "--host") == 0)
                        o->host = v;
                else {
                        fprintf(stderr, "unknown option '%s'\n", argv[i]);
                        usage();
                        return -1;
                }
                if (rc != 0)
                        return -1;
                i++;
        }
        return 0;
}

/* Write-then-rename, so a reader never sees a half-written file. */
static int write_bootstrap_file(const char *path, const char *bootstraps, char *errstr,
                                size_t errstr_size)
{
        char tmp[4200];
        FILE *f = NULL;
        snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
        f = fopen(tmp, "w");
        if (!f)
                goto fail;
        if (fprintf(f, "%s\n", bootstraps) < 0)
                goto fail;
        if (fclose(f) != 0) {
                f = NULL;
                goto fail;
        }
        f = NULL;
        if (rename(tmp, path) != 0)
                goto fail;
        return 0;
fail:
        snprintf(errstr, errstr_size, "write %.3000s: %s", path, strerror(errno));
        if (f)
                fclose(f);
        unlink(tmp);
        return -1;
}

int main(int argc, char **argv)
{
        struct options o;
        struct db_cluster cluster;
        struct db_proxy *proxy = NULL;
        struct db_control *control = NULL;
        struct pollfd *pfds = NULL;
        char errstr[3200], path[4096], addr[64], caddr[64];
        enum qz_log_level level = QZ_LOG_INFO;
        const char *env = getenv("QOQNUZ_LOG_LEVEL");
        int rc = 1, lfd, cfd;

        memset(&cluster, 0, sizeof(cluster));
        if (parse_options(argc, argv, &o) != 0)
                return 2;
        if (env && qz_log_level_parse(env, &level) != 0) {
                fprintf(stderr,
                        "QOQNUZ_LOG_LEVEL: bad value '%s': expected debug|info|warn|error\n", env);
                return 2;
        }
        qz_log_init("dev-broker", level);
        qz_sig_install();
        snprintf(path, sizeof(path), "%s/kafka.bootstrap", o.run_dir);
        unlink(path); /* a stale file from an earlier run must not signal readiness */

        if (db_cluster_start(&cluster, (int)o.brokers, errstr, sizeof(errstr)) != 0) {
                qz_error("mock cluster: %s", errstr);
                goto fail;
        }
        if ((lfd = db_listen(o.host, (int)o.port, errstr, sizeof(errstr))) < 0) {
                qz_error("bootstrap port: %s", errstr);
                goto fail;
        }
        if (db_proxy_new(lfd, &cluster, &proxy) != 0) {
                close(lfd);
                goto fail;
        }
        if ((cfd = db_listen(o.host, (int)o.control_port, errstr, sizeof(errstr))) < 0) {
                qz_error("control port: %s", errstr);
                goto fail;
        }
        if (db_control_new(cfd, &cluster, &control) != 0) {
                close(cfd);
                goto fail;
        }
        pfds = calloc(POLL_SLOTS, sizeof(*pfds));
        if (!pfds)
                goto fail;
        if (write_bootstrap_file(path, cluster.bootstraps, errstr, sizeof(errstr)) != 0) {
                qz_error("%s", errstr);
                goto fail;
        }
        snprintf(addr, sizeof(addr), "%s:%ld", o.host, o.port);
        snprintf(caddr, sizeof(caddr), "%s:%ld", o.host, o.control_port);
        qz_log_kv(QZ_LOG_INFO, "up", "version", rd_kafka_version_str(), "bootstrap", addr,
                  "control", caddr, "brokers", cluster.bootstraps, "bootstrap_file", path, NULL);

        while (!qz_sig_stop_requested()) {
                size_t np = db_proxy_fill(proxy, pfds, POLL_SLOTS / 2);
                size_t nc = db_control_fill(control, pfds + np, POLL_SLOTS - np);
                if (poll(pfds, np + nc, 200) < 0) {
                        if (errno == EINTR)
                                continue;
                        qz_error("poll: %s", strerror(errno));
                        goto fail;
                }
                db_proxy_handle(proxy, pfds, np);
                db_control_handle(control, pfds + np, nc);
        }
        qz_info("stopping");
        rc = 0;
fail:
        unlink(path);
        db_control_free(control);
        db_proxy_free(proxy);
        db_cluster_stop(&cluster);
        free(pfds);
        if (rc == 0)
                qz_info("stopped");
        return rc;
}

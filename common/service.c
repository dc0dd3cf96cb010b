/* service.c - what every service's main() shares: common settings, start-up, the "up" line. */
#include "service.h"

#include "avro.h"
#include "metrics.h"
#include "pg.h"
#include "sig.h"
#include "version.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qz_service_init(const char *name, const char *purpose, int argc, char **argv,
                     const struct qz_cfg_entry *table, const struct qz_service_cfg *c)
{
        if (argc > 1) {
                bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
                FILE *out = help ? stdout : stderr;
                if (!help)
                        fprintf(out, "%s: unknown argument '%s'\n", name, argv[1]);
                fprintf(out, "%s %s: %s\nSettings (environment variables):\n", name, QZ_VERSION,
                        purpose);
                if (help)
                        qz_cfg_print_help(table);
                exit(help ? 0 : 2);
        }
        qz_cfg_load_or_exit(table);
        qz_log_init(name, c->log_level);
        qz_sig_install();
}

struct qz_http_server *qz_service_http_start(const struct qz_http_options *ho, ...)
{
        char err[512], addr[300];
        struct qz_http_server *http = qz_http_start(ho, err, sizeof(err));
        if (!http) {
                qz_error("http: %s", err);
                return NULL;
        }
        snprintf(addr, sizeof(addr), "%s:%d", ho->addr.host, qz_http_port(http));
        json_t *fields = json_pack("{s:s, s:s}", "version", QZ_VERSION, "http", addr);
        va_list ap;
        va_start(ap, ho);
        const char *k;
        while ((k = va_arg(ap, const char *)) != NULL) {
                const char *v = va_arg(ap, const char *);
                json_t *jv = v ? json_string(v) : json_null();
                json_object_set_new(fields, k, jv ? jv : json_string("(invalid utf-8)"));
        }
        va_end(ap);
        qz_log_json(QZ_LOG_INFO, "up", fields);
        json_decref(fields);
        return http;
}

void qz_service_pg_idle_cb(void *pg)
{
        char err[512];
        qz_pg_ping(pg, err, sizeof(err));
}

int qz_service_open(const struct qz_service_cfg *c, const char *app_name,
                    struct qz_avro_registry **avro, struct qz_metrics **metrics, struct qz_pg **pg)
{
        char err[512];
        if (qz_avro_registry_load(c->schema_dir, avro, err, sizeof(err)) != 0) {
                qz_error("schemas: %s", err);
                return -1;
        }
        if (!(*metrics = qz_metrics_new())) {
                qz_error("out of memory");
                return -1;
        }
        if (!pg)
                return 0;
        struct qz_pg_opts po = {.dsn = c->pg_dsn, .application_name = app_name};
        if (!(*pg = qz_pg_new(&po, err, sizeof(err)))) {
                qz_error("postgres: %s", err);
                return -1;
        }
        qz_pg_connect(*pg, err, sizeof(err)); /* early, for readiness; failures retry later */
        return 0;
}

/* main.c - qoqnuzctl: the operator's command line (migrate, token, demo, avro). */
#include "ctl.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *help;
} commands[] = {
    {"migrate", ctl_migrate, "apply sql/NNN_*.sql migrations in order (QOQNUZ_PG_DSN)"},
    {"token", ctl_token, "print a signed dev JWT: --role admin|user|service [--sub UUID]"},
    {"demo", ctl_demo, "load demo catalog and plays through the real paths"},
    {"job", ctl_job, "run NAME [--param k=v]... [--wait SECONDS] | status RUN_ID"},
    {"avro", ctl_avro, "encode|decode SCHEMA: JSON <-> single-object Avro on stdin/stdout"},
};

/* To stdout when asked for (--help, exit 0), to stderr on a usage error (exit 2). */
static void usage(FILE *out)
{
        fprintf(out, "usage: qoqnuzctl COMMAND [args]   (qoqnuzctl COMMAND --help for one)\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
            strcmp(argv[1], "help") == 0) {
                usage(stdout);
                return 0;
        }
        qz_log_init("qoqnuzctl", QZ_LOG_INFO);
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "qoqnuzctl: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
}

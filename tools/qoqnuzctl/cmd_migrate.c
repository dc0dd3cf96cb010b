/* cmd_migrate.c - qoqnuzctl migrate (being written). */
#include "ctl.h"

#include <stdio.h>

int ctl_migrate(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        fprintf(stderr, "qoqnuzctl migrate: not built yet\n");
        return 1;
}

/* cmd_avro.c - qoqnuzctl avro (being written). */
#include "ctl.h"

#include <stdio.h>

int ctl_avro(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        fprintf(stderr, "qoqnuzctl avro: not built yet\n");
        return 1;
}

/* cmd_token.c - qoqnuzctl token (being written). */
#include "ctl.h"

#include <stdio.h>

int ctl_token(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        fprintf(stderr, "qoqnuzctl token: not built yet\n");
        return 1;
}

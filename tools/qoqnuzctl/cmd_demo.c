/* cmd_demo.c - qoqnuzctl demo (being written). */
#include "ctl.h"

#include <stdio.h>

int ctl_demo(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        fprintf(stderr, "qoqnuzctl demo: not built yet\n");
        return 1;
}

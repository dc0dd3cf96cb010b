/* sig.c - SIGINT/SIGTERM handling: the handler only sets a flag. */
#include "sig.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_count;

static void on_stop_signal(int signo)
{
        (void)signo;
        if (stop_count++ > 0)
                _exit(130); /* second signal: the operator insists */
}

void qz_sig_install(void)
{
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
}

bool qz_sig_stop_requested(void)
{
        return stop_count > 0;
}

void qz_sig_request_stop(void)
{
        stop_count = 1;
}

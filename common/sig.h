/* sig.h - SIGINT/SIGTERM handling: the handler only sets a flag.
 *
 * The first signal asks for a graceful stop (the service's loop polls
 * qz_sig_stop_requested() and runs its shutdown stages); a second one exits
 * at once with status 130. The flag is process-wide by nature (signals are),
 * so it is the one piece of mutable state kept here rather than in main.c. */
#ifndef QZ_SIG_H
#define QZ_SIG_H

#include <stdbool.h>

/* Installs the handlers and ignores SIGPIPE. Call once from main(). */
void qz_sig_install(void);
bool qz_sig_stop_requested(void);
/* For tests and internal fatal errors: request the same graceful stop. */
void qz_sig_request_stop(void);

#endif

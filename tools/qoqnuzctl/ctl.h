/* ctl.h - qoqnuzctl subcommands: each lives in its own cmd_<name>.c. */
#ifndef QZ_CTL_H
#define QZ_CTL_H

/* Each returns the process exit status (0 ok, 1 failure, 2 usage/config). */
int ctl_migrate(int argc, char **argv);
int ctl_token(int argc, char **argv);
int ctl_demo(int argc, char **argv);
int ctl_avro(int argc, char **argv);
int ctl_job(int argc, char **argv);

#endif

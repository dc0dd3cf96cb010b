/* cmd_token.c - qoqnuzctl token: print an HS256 dev JWT signed with JWT_SECRET. */
#include "auth.h"
#include "ctl.h"
#include "json.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_SECRET "dev-jwt-secret"
#define DEFAULT_TTL    86400L
#define MAX_TTL        (366L * 86400L)

/* Fixed per role so a dev stack's rows line up across token runs. */
static const char *dev_subs[] = {
    [QZ_AUTH_ROLE_USER] = "00000000-0000-4000-8000-000000000001",
    [QZ_AUTH_ROLE_ADMIN] = "00000000-0000-4000-8000-0000000000ad",
    [QZ_AUTH_ROLE_SERVICE] = "00000000-0000-4000-8000-00000000005e",
};

static void usage(void)
{
        fprintf(stderr, "usage: qoqnuzctl token --role admin|user|service [--sub UUID|random] "
                        "[--ttl SECONDS]\n"
                        "  signs with $JWT_SECRET (default " DEFAULT_SECRET "); ttl default "
                        "86400\n");
}

int ctl_token(int argc, char **argv)
{
        static const struct option longopts[] = {
            {"role", required_argument, NULL, 'r'},
            {"sub", required_argument, NULL, 's'},
            {"ttl", required_argument, NULL, 't'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        const char *role = NULL, *sub = NULL, *secret;
        char random_sub[QZ_UUID_STR_LEN + 1], err[256], *end;
        long ttl = DEFAULT_TTL;
        enum qz_auth_role r;
        char *token;
        int c;

        optind = 1;
        while ((c = getopt_long(argc, argv, "r:s:t:h", longopts, NULL)) != -1) {
                switch (c) {
                case 'r':
                        role = optarg;
                        break;
                case 's':
                        sub = optarg;
                        break;
                case 't':
                        errno = 0;
                        ttl = strtol(optarg, &end, 10);
                        if (errno || end == optarg || *end || ttl <= 0 || ttl > MAX_TTL) {
                                fprintf(stderr,
                                        "qoqnuzctl token: bad --ttl '%s': expected 1..%ld\n",
                                        optarg, MAX_TTL);
                                return 2;
                        }
                        break;
                case 'h':
                        usage();
                        return 0;
                default:
                        usage();
                        return 2;
                }
        }
        if (optind != argc || !role || qz_auth_role_parse(role, &r) != 0) {
                if (role && qz_auth_role_parse(role, &r) != 0)
                        fprintf(stderr, "qoqnuzctl token: bad --role '%s'\n", role);
                usage();
                return 2;
        }
        if (!sub) {
                sub = dev_subs[r];
        } else if (strcmp(sub, "random") == 0) {
                qz_uuid_generate(random_sub);
                sub = random_sub;
        } else if (!qz_uuid_valid(sub)) {
                fprintf(stderr, "qoqnuzctl token: bad --sub '%s': expected a UUID or 'random'\n",
                        sub);
                return 2;
        }
        secret = getenv("JWT_SECRET");
        if (!secret || !*secret)
                secret = DEFAULT_SECRET;
        token = qz_auth_sign(secret, sub, role, (int64_t)time(NULL) + ttl, err, sizeof(err));
        if (!token) {
                fprintf(stderr, "qoqnuzctl token: %s\n", err);
                return 1;
        }
        printf("%s\n", token);
        free(token);
        return 0;
}

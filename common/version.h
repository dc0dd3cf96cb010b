/* version.h - the release version every service reports in its "up" line. */
#ifndef QZ_VERSION_H
#define QZ_VERSION_H

#define QZ_VERSION "0.1.0"

#endif

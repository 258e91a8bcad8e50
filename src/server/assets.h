/* The web page files (web/), embedded into the binary at build time by
 * cmake/embed_files.cmake. */
#ifndef SD_SERVER_ASSETS_H
#define SD_SERVER_ASSETS_H

#include <stddef.h>

typedef struct srv_asset {
    const char *name; /* file name in web/, e.g. "index.html" */
    const unsigned char *data;
    size_t len;
} srv_asset;

extern const srv_asset srv_assets[];
extern const size_t srv_n_assets;

#endif

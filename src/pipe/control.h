/* sd_controlnet internals (src/pipe/control.c): a ControlNetModel loaded for one model. */
#ifndef SD_PIPE_CONTROL_H
#define SD_PIPE_CONTROL_H

#include "models/controlnet.h"
#include "pipe/model.h"

struct sd_controlnet {
    const sd_model *m; /* the model it was loaded for (its backend holds the weights) */
    char *source;      /* resolved folder or file */
    char *name;        /* the folder or file name, for parameters text */
    sd_weights w;
    sd_cnet_config cfg;
    sd_cnet *net;
};

#endif

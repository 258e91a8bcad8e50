#include "check/check.h"

sd_status sd_check_stream(sd_case *c)
{
    return sd_fail(SD_ERR_UNSUPPORTED, "%s: this kind of case is not implemented yet", c->name);
}

#include "backend/backend.h"

/* The CUDA build (SD_HAVE_CUDA) defines sd_backend_cuda_create in cuda/cuda_backend.c. */
#ifndef SD_HAVE_CUDA
sd_status sd_backend_cuda_create(int device, sd_backend **out)
{
    *out = NULL;
    return sd_fail(SD_ERR_BACKEND, "this streamdiff was built without CUDA (nvcc was not found at build time); "
                                   "use the CPU backend (SD_BACKEND_CPU) or rebuild on a machine with the CUDA toolkit");
}
#endif

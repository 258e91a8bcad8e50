/* The video API of io/video.h for builds without FFmpeg (cmake -DSD_FULL=OFF on a machine without
 * libavformat & co, e.g. a GPU box that only runs the engine): every call fails with a message that
 * says how to get video support. Compiled instead of video.c (CMakeLists.txt). */
#include "io/video.h"

#ifndef SD_HAVE_FFMPEG
#include <string.h>

#define NO_FFMPEG(path)                                                                                              \
    sd_fail(SD_ERR_UNSUPPORTED,                                                                                      \
            "%s: this streamdiff was built without FFmpeg, so it reads and writes no video files, cameras or "       \
            "image folders; install libavformat-dev libavcodec-dev libswscale-dev libavutil-dev and rebuild",        \
            path ? path : "video")

bool sd_video_path_is_folder(const char *path)
{
    (void)path;
    return false;
}

sd_status sd_video_source_open(const char *path, sd_video_source **out)
{
    *out = NULL;
    return NO_FFMPEG(path);
}

void sd_video_source_close(sd_video_source *v) { (void)v; }
sd_video_kind sd_video_source_kind(const sd_video_source *v)
{
    (void)v;
    return SD_VIDEO_FILE;
}
double sd_video_source_fps(const sd_video_source *v)
{
    (void)v;
    return 0;
}
sd_status sd_video_source_read(sd_video_source *v, sd_rgb *frame)
{
    (void)v;
    (void)frame;
    return NO_FFMPEG("video");
}
sd_status sd_video_sink_open(const char *path, int width, int height, double fps, sd_video_sink **out)
{
    (void)width;
    (void)height;
    (void)fps;
    *out = NULL;
    return NO_FFMPEG(path);
}
sd_status sd_video_sink_write(sd_video_sink *v, const sd_rgb *frame)
{
    (void)v;
    (void)frame;
    return NO_FFMPEG("video");
}
sd_status sd_video_sink_close(sd_video_sink *v)
{
    (void)v;
    return SD_OK;
}
const char *sd_video_sink_codec(const sd_video_sink *v)
{
    (void)v;
    return "none";
}
#else
typedef int sd_video_none_unused; /* video.c is compiled instead */
#endif

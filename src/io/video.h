/* Video frames in and out, through Debian's FFmpeg libraries (libavformat,
 * libavcodec, libswscale, libavutil; libavdevice for V4L2 cameras).
 *
 * A source gives RGB8 frames from
 *   - a video file FFmpeg can decode (.mp4, .mkv, .webm, .avi, .mov, ...),
 *   - a folder of PNG/JPEG images, read in name order (zero-pad the numbers:
 *     frame_0009.png sorts before frame_0010.png, frame_9.png does not),
 *   - a V4L2 camera, /dev/videoN (needs a build with libavdevice).
 * A sink writes RGB8 frames to
 *   - a folder of PNGs (an existing folder, or a path ending in '/'):
 *     frame_000000.png, frame_000001.png, ...
 *   - a video file whose container follows the extension (.mp4, .mkv, .mov,
 *     .avi, ...): H.264 (libx264, CRF 18, preset veryfast) where the container
 *     takes it and the build has libx264, else MPEG-4 part 2 (q 3), else the
 *     container's default encoder. 4:2:0 video needs even width and height.
 *   - a live output, frames leaving as they are made (wall-clock timestamps,
 *     H.264 tune zerolatency, no B-frames, a key frame every second, every
 *     packet flushed at once; connecting gives up after 5 s):
 *       rtmp://host[:port]/app/key, rtmps://...  FLV (OBS, nginx-rtmp, YouTube, Twitch)
 *       srt://host:port[?mode=caller]             MPEG-TS over SRT
 *       udp://host:port, tcp://host:port          MPEG-TS
 *       rtp://host:port                           MPEG-TS over RTP
 *       /dev/videoN                               raw frames to a v4l2loopback device
 *                                                 (a virtual camera; needs libavdevice)
 *     A scheme this FFmpeg build cannot write is a named error.
 * Every failure returns an sd_status with a message naming the path. */
#ifndef SD_VIDEO_H
#define SD_VIDEO_H

#include "io/image.h"

typedef enum sd_video_kind { SD_VIDEO_FILE, SD_VIDEO_FOLDER, SD_VIDEO_CAMERA } sd_video_kind;

typedef struct sd_video_source sd_video_source;

/* Opens `path` (a file, a folder or a camera device; see above). */
sd_status sd_video_source_open(const char *path, sd_video_source **out);
void sd_video_source_close(sd_video_source *v);
sd_video_kind sd_video_source_kind(const sd_video_source *v);
/* Frames per second of the input; 0 when unknown (image folders). */
double sd_video_source_fps(const sd_video_source *v);
/* The next frame, into *frame (reallocated when it has another size, else
 * reused). SD_ERR_NOT_FOUND (without a message worth printing) at the end. */
sd_status sd_video_source_read(sd_video_source *v, sd_rgb *frame);

typedef struct sd_video_sink sd_video_sink;

/* fps <= 0 means 30. */
sd_status sd_video_sink_open(const char *path, int width, int height, double fps, sd_video_sink **out);
/* Frames must have the sink's size. */
sd_status sd_video_sink_write(sd_video_sink *v, const sd_rgb *frame);
/* Finishes the output (drains the encoder, writes the trailer) and frees the
 * sink. Returns the first error of the finishing steps. NULL is fine. */
sd_status sd_video_sink_close(sd_video_sink *v);
/* "libx264", "mpeg4", ..., or "png" for a folder. */
const char *sd_video_sink_codec(const sd_video_sink *v);

/* True when `path` names a folder sink (an existing folder or a trailing '/'). */
bool sd_video_path_is_folder(const char *path);

#endif

/* Video sources and sinks on FFmpeg (see video.h). */
#include "io/video.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#ifdef SD_HAVE_AVDEVICE
#include <libavdevice/avdevice.h>
#endif

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *averr(int e, char *buf, size_t n)
{
    if (av_strerror(e, buf, n) < 0)
        snprintf(buf, n, "FFmpeg error %d", e);
    return buf;
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void ff_init(void)
{
    av_log_set_level(AV_LOG_FATAL); /* errors come back as sd_status messages */
#ifdef SD_HAVE_AVDEVICE
    avdevice_register_all();
#endif
}

bool sd_video_path_is_folder(const char *path)
{
    size_t n = path ? strlen(path) : 0;
    return n && (path[n - 1] == '/' || sd_dir_exists(path));
}

static bool has_image_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* ---------------------------------------------------------------- source */

struct sd_video_source {
    sd_video_kind kind;
    char *path;
    /* folder */
    char **files;
    size_t nfiles, next;
    /* file / camera */
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVFrame *frame;
    AVPacket *pkt;
    struct SwsContext *sws;
    int stream;
    bool draining, ended;
    double fps;
    int64_t count, decoded;
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static sd_status open_folder(sd_video_source *v, const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return sd_fail(SD_ERR_IO, "%s: cannot read the folder: %s", path, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    sd_status st = SD_OK;
    while (st == SD_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_image_ext(e->d_name))
            continue;
        char *full = sd_path_join(path, e->d_name);
        if (!full || !sd_file_exists(full)) {
            free(full);
            if (!full)
                st = SD_ERR_OUT_OF_MEMORY;
            continue;
        }
        if (v->nfiles == cap) {
            cap = cap ? 2 * cap : 64;
            char **nf = realloc(v->files, cap * sizeof *nf);
            if (!nf) {
                free(full);
                st = sd_fail(SD_ERR_OUT_OF_MEMORY, "%s: out of memory listing the folder", path);
                break;
            }
            v->files = nf;
        }
        v->files[v->nfiles++] = full;
    }
    closedir(d);
    SD_TRY(st);
    if (!v->nfiles)
        return sd_fail(SD_ERR_NOT_FOUND, "%s: the folder has no .png, .jpg or .jpeg images", path);
    qsort(v->files, v->nfiles, sizeof *v->files, cmp_str);
    v->count = (int64_t)v->nfiles;
    return SD_OK;
}

static sd_status open_ffmpeg(sd_video_source *v, const char *path, bool camera)
{
    char eb[256];
    const AVInputFormat *ifmt = NULL;
    if (camera) {
#ifdef SD_HAVE_AVDEVICE
        ifmt = av_find_input_format("video4linux2");
        if (!ifmt)
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: this FFmpeg has no video4linux2 input device", path);
#else
        return sd_fail(SD_ERR_UNSUPPORTED,
                       "%s: camera input needs streamdiff built with libavdevice (apt-get install libavdevice-dev, "
                       "then rebuild)", path);
#endif
    }
    int r = avformat_open_input(&v->fmt, path, ifmt, NULL);
    if (r < 0) {
        v->fmt = NULL;
        if (camera)
            return sd_fail(SD_ERR_IO, "%s: cannot open the camera: %s", path, averr(r, eb, sizeof eb));
        return sd_fail(SD_ERR_FORMAT, "%s: not a video or image sequence FFmpeg can read (%s)", path,
                       averr(r, eb, sizeof eb));
    }
    r = avformat_find_stream_info(v->fmt, NULL);
    if (r < 0)
        return sd_fail(SD_ERR_FORMAT, "%s: cannot read the stream information (%s); the file may be truncated", path,
                       averr(r, eb, sizeof eb));
    const AVCodec *codec = NULL;
    r = av_find_best_stream(v->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (r == AVERROR_DECODER_NOT_FOUND)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: this FFmpeg has no decoder for the video stream", path);
    if (r < 0)
        return sd_fail(SD_ERR_FORMAT, "%s: the file has no video stream", path);
    v->stream = r;
    AVStream *s = v->fmt->streams[r];
    v->dec = avcodec_alloc_context3(codec);
    if (!v->dec)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "%s: out of memory (decoder)", path);
    if ((r = avcodec_parameters_to_context(v->dec, s->codecpar)) < 0 || (r = avcodec_open2(v->dec, codec, NULL)) < 0)
        return sd_fail(SD_ERR_FORMAT, "%s: cannot open the %s decoder (%s)", path, codec->name, averr(r, eb, sizeof eb));
    AVRational fr = av_guess_frame_rate(v->fmt, s, NULL);
    v->fps = fr.num > 0 && fr.den > 0 ? av_q2d(fr) : 0.0;
    v->count = s->nb_frames > 0 ? s->nb_frames : -1;
    v->frame = av_frame_alloc();
    v->pkt = av_packet_alloc();
    if (!v->frame || !v->pkt)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "%s: out of memory (frame)", path);
    return SD_OK;
}

sd_status sd_video_source_open(const char *path, sd_video_source **out)
{
    *out = NULL;
    if (!path || !*path)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "video input: empty path");
    pthread_once(&g_once, ff_init);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return sd_fail(errno == ENOENT ? SD_ERR_NOT_FOUND : SD_ERR_IO, "%s: %s", path,
                       errno == ENOENT ? "no such file, folder or camera device" : strerror(errno));
    sd_video_source *v = sd_calloc(1, sizeof *v);
    if (!v)
        return SD_ERR_OUT_OF_MEMORY;
    v->path = sd_strdup(path);
    v->count = -1;
    sd_status st;
    if (S_ISDIR(sb.st_mode)) {
        v->kind = SD_VIDEO_FOLDER;
        st = open_folder(v, path);
    } else if (S_ISCHR(sb.st_mode)) {
        v->kind = SD_VIDEO_CAMERA;
        st = open_ffmpeg(v, path, true);
    } else {
        v->kind = SD_VIDEO_FILE;
        st = sb.st_size == 0 ? sd_fail(SD_ERR_FORMAT, "%s: the file is empty", path) : open_ffmpeg(v, path, false);
    }
    if (st != SD_OK) {
        sd_video_source_close(v);
        return st;
    }
    *out = v;
    return SD_OK;
}

void sd_video_source_close(sd_video_source *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nfiles; i++)
        free(v->files[i]);
    free(v->files);
    sws_freeContext(v->sws);
    av_packet_free(&v->pkt);
    av_frame_free(&v->frame);
    avcodec_free_context(&v->dec);
    avformat_close_input(&v->fmt);
    free(v->path);
    free(v);
}

sd_video_kind sd_video_source_kind(const sd_video_source *v) { return v->kind; }
double sd_video_source_fps(const sd_video_source *v) { return v->fps; }

static sd_status convert_frame(sd_video_source *v, sd_rgb *out)
{
    AVFrame *f = v->frame;
    int w = f->width, h = f->height;
    if (w <= 0 || h <= 0 || w > SD_IMAGE_MAX_SIDE || h > SD_IMAGE_MAX_SIDE || f->format < 0)
        return sd_fail(SD_ERR_FORMAT, "%s: frame %lld has an invalid size %dx%d", v->path, (long long)v->decoded, w, h);
    if (!out->data || out->width != w || out->height != h) {
        sd_rgb_free(out);
        SD_TRY(sd_rgb_alloc(out, w, h));
    }
    v->sws = sws_getCachedContext(v->sws, w, h, (enum AVPixelFormat)f->format, w, h, AV_PIX_FMT_RGB24, SWS_BILINEAR,
                                  NULL, NULL, NULL);
    if (!v->sws)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: cannot convert pixel format %s to RGB", v->path,
                       av_get_pix_fmt_name((enum AVPixelFormat)f->format));
    uint8_t *dst[4] = {out->data, NULL, NULL, NULL};
    int ls[4] = {3 * w, 0, 0, 0};
    sws_scale(v->sws, (const uint8_t *const *)f->data, f->linesize, 0, h, dst, ls);
    v->decoded++;
    av_frame_unref(f);
    return SD_OK;
}

sd_status sd_video_source_read(sd_video_source *v, sd_rgb *frame)
{
    if (v->kind == SD_VIDEO_FOLDER) {
        if (v->next >= v->nfiles)
            return SD_ERR_NOT_FOUND;
        sd_rgb img;
        SD_TRY(sd_rgb_load(v->files[v->next], &img));
        v->next++;
        sd_rgb_free(frame);
        *frame = img;
        return SD_OK;
    }
    char eb[256];
    if (v->ended)
        return SD_ERR_NOT_FOUND;
    for (;;) {
        int r = avcodec_receive_frame(v->dec, v->frame);
        if (r == 0)
            return convert_frame(v, frame);
        if (r == AVERROR_EOF) {
            v->ended = true;
            return SD_ERR_NOT_FOUND;
        }
        if (r != AVERROR(EAGAIN))
            return sd_fail(SD_ERR_FORMAT, "%s: cannot decode frame %lld (%s)", v->path, (long long)v->decoded,
                           averr(r, eb, sizeof eb));
        if (v->draining) { /* should not happen: EOF ends draining */
            v->ended = true;
            return SD_ERR_NOT_FOUND;
        }
        r = av_read_frame(v->fmt, v->pkt);
        if (r == AVERROR_EOF) {
            v->draining = true;
            avcodec_send_packet(v->dec, NULL);
            continue;
        }
        if (r < 0)
            return sd_fail(v->kind == SD_VIDEO_CAMERA ? SD_ERR_IO : SD_ERR_FORMAT, "%s: read error after %lld frames (%s)",
                           v->path, (long long)v->decoded, averr(r, eb, sizeof eb));
        if (v->pkt->stream_index == v->stream) {
            r = avcodec_send_packet(v->dec, v->pkt);
            if (r < 0 && r != AVERROR(EAGAIN) && r != AVERROR_INVALIDDATA) {
                av_packet_unref(v->pkt);
                return sd_fail(SD_ERR_FORMAT, "%s: corrupt data after %lld frames (%s)", v->path,
                               (long long)v->decoded, averr(r, eb, sizeof eb));
            }
        }
        av_packet_unref(v->pkt);
    }
}

/* ---------------------------------------------------------------- sink */

struct sd_video_sink {
    char *path;
    bool folder;
    int w, h;
    int64_t n;
    AVFormatContext *oc;
    AVCodecContext *enc;
    AVStream *st;
    AVFrame *frame;
    AVPacket *pkt;
    struct SwsContext *sws;
    bool header_written, file_open;
    bool live;          /* a network URL or a V4L2 loopback device: low-latency settings */
    bool wallclock;     /* live with H.264 or raw frames: wall-clock timestamps (ms) */
    double t0;          /* live: time of the first frame (s) */
    int64_t last_pts;   /* live: the previous frame's pts (ms), kept strictly increasing */
    const char *codec;
};

static enum AVPixelFormat pick_pix_fmt(const AVCodec *c)
{
    if (!c->pix_fmts)
        return AV_PIX_FMT_YUV420P;
    for (const enum AVPixelFormat *p = c->pix_fmts; *p != AV_PIX_FMT_NONE; p++)
        if (*p == AV_PIX_FMT_YUV420P)
            return *p;
    return c->pix_fmts[0];
}

/* The container of a live output (see video.h), NULL for a file. Fails for a URL scheme this FFmpeg
 * build cannot write. */
static sd_status live_format(const char *path, const char **fmt)
{
    *fmt = NULL;
    if (!strncmp(path, "/dev/video", 10)) {
#ifdef SD_HAVE_AVDEVICE
        *fmt = "video4linux2";
        return SD_OK;
#else
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: writing to a V4L2 device needs a build with libavdevice "
                                           "(apt-get install libavdevice-dev, then rebuild)", path);
#endif
    }
    const char *sep = strstr(path, "://");
    if (!sep)
        return SD_OK;
    size_t n = (size_t)(sep - path);
    static const struct { const char *scheme, *format; } map[] = {
        {"rtmp", "flv"}, {"rtmps", "flv"}, {"srt", "mpegts"}, {"udp", "mpegts"}, {"tcp", "mpegts"},
        {"rtp", "rtp_mpegts"}, {"file", NULL}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strlen(map[i].scheme) == n && !strncasecmp(path, map[i].scheme, n)) {
            if (!map[i].format)
                return SD_OK;
            if (!avio_find_protocol_name(path))
                return sd_fail(SD_ERR_UNSUPPORTED, "%s: this FFmpeg build cannot write %.*s:// URLs", path, (int)n,
                               path);
            *fmt = map[i].format;
            return SD_OK;
        }
    return sd_fail(SD_ERR_UNSUPPORTED,
                   "%s: unsupported output URL scheme '%.*s'; use rtmp://, rtmps://, srt://, udp://, tcp:// or rtp:// "
                   "(a live stream), a /dev/videoN V4L2 loopback device, a video file or a folder",
                   path, (int)n, path);
}

static sd_status open_encoder(sd_video_sink *v, double fps)
{
    char eb[256];
    const char *live_fmt;
    SD_TRY(live_format(v->path, &live_fmt));
    v->live = live_fmt != NULL;
    int r = avformat_alloc_output_context2(&v->oc, NULL, live_fmt, v->path);
    if (r < 0 || !v->oc)
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "%s: no video container for this file extension; use .mp4, .mkv, .mov or .avi, a folder "
                       "(ending in /) for PNG frames, or a live URL (rtmp://, srt://, udp://, tcp://)", v->path);
    const AVOutputFormat *of = v->oc->oformat;
    const AVCodec *c = NULL;
    if (!strcmp(of->name, "video4linux2") || !strcmp(of->name, "v4l2")) /* loopback devices take raw frames */
        c = avcodec_find_encoder(AV_CODEC_ID_RAWVIDEO);
    if (!c && v->live) /* FLV and MPEG-TS carry H.264; the containers' defaults (FLV1, MPEG-2) are poor live codecs */
        c = avcodec_find_encoder_by_name("libx264");
    if (!c && !strcmp(of->name, "avi")) /* the classic AVI payload */
        c = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!c && avformat_query_codec(of, AV_CODEC_ID_H264, FF_COMPLIANCE_NORMAL) == 1)
        c = avcodec_find_encoder_by_name("libx264");
    if (!c && avformat_query_codec(of, AV_CODEC_ID_MPEG4, FF_COMPLIANCE_NORMAL) == 1)
        c = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!c && of->video_codec != AV_CODEC_ID_NONE)
        c = avcodec_find_encoder(of->video_codec);
    if (!c)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: no video encoder available for the %s container", v->path, of->name);
    v->codec = c->name;
    /* wall-clock timestamps need an encoder that takes any time base (H.264, raw frames) */
    v->wallclock = v->live && (c->id == AV_CODEC_ID_H264 || c->id == AV_CODEC_ID_RAWVIDEO);
    v->st = avformat_new_stream(v->oc, NULL);
    v->enc = avcodec_alloc_context3(c);
    v->frame = av_frame_alloc();
    v->pkt = av_packet_alloc();
    if (!v->st || !v->enc || !v->frame || !v->pkt)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "%s: out of memory (encoder)", v->path);
    AVRational fr = av_d2q(fps, 100000);
    v->enc->width = v->w;
    v->enc->height = v->h;
    v->enc->framerate = fr;
    /* live: frames leave as they are made, stamped with the wall clock in ms (variable frame rate);
     * a key frame every second so a viewer joins fast; no B-frames (no reordering delay) */
    v->enc->time_base = v->wallclock ? (AVRational){1, 1000} : av_inv_q(fr);
    v->enc->pix_fmt = pick_pix_fmt(c);
    v->enc->gop_size = v->live ? (int)fmax(1.0, fps + 0.5) : 30;
    if (v->live)
        v->enc->max_b_frames = 0;
    if (v->enc->pix_fmt == AV_PIX_FMT_YUV420P && (v->w % 2 || v->h % 2))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: %s 4:2:0 video needs an even width and height, got %dx%d", v->path,
                       c->name, v->w, v->h);
    if (of->flags & AVFMT_GLOBALHEADER)
        v->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (!strcmp(c->name, "libx264")) {
        av_opt_set(v->enc->priv_data, "preset", "veryfast", 0);
        av_opt_set(v->enc->priv_data, "crf", v->live ? "20" : "18", 0);
        if (v->live) /* no lookahead, no frame threading: a frame's packet leaves before the next frame comes */
            av_opt_set(v->enc->priv_data, "tune", "zerolatency", 0);
    } else if (c->id == AV_CODEC_ID_MPEG4) {
        v->enc->flags |= AV_CODEC_FLAG_QSCALE;
        v->enc->global_quality = FF_QP2LAMBDA * 3;
    }
    if ((r = avcodec_open2(v->enc, c, NULL)) < 0)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: cannot open the %s encoder at %dx%d (%s)", v->path, c->name, v->w, v->h,
                       averr(r, eb, sizeof eb));
    if ((r = avcodec_parameters_from_context(v->st->codecpar, v->enc)) < 0)
        return sd_fail(SD_ERR_INTERNAL, "%s: %s", v->path, averr(r, eb, sizeof eb));
    v->st->time_base = v->enc->time_base;
    v->st->avg_frame_rate = fr;
    if (!(of->flags & AVFMT_NOFILE)) {
        AVDictionary *io = NULL;
        if (v->live) /* an unreachable peer fails within 5 s instead of hanging (microseconds) */
            av_dict_set(&io, "rw_timeout", "5000000", 0);
        r = avio_open2(&v->oc->pb, v->path, AVIO_FLAG_WRITE, NULL, &io);
        av_dict_free(&io);
        if (r < 0)
            return sd_fail(SD_ERR_IO, v->live ? "%s: cannot connect or open the live output (%s); is the receiver "
                                                "running and the address right?"
                                              : "%s: cannot create the file (%s)",
                           v->path, averr(r, eb, sizeof eb));
        v->file_open = true;
    }
    if (v->live) /* every packet goes out at once */
        v->oc->flags |= AVFMT_FLAG_FLUSH_PACKETS;
    if ((r = avformat_write_header(v->oc, NULL)) < 0)
        return sd_fail(SD_ERR_IO, "%s: cannot write the %s header (%s)", v->path, of->name, averr(r, eb, sizeof eb));
    v->header_written = true;
    v->frame->format = v->enc->pix_fmt;
    v->frame->width = v->w;
    v->frame->height = v->h;
    if ((r = av_frame_get_buffer(v->frame, 0)) < 0)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "%s: out of memory (frame)", v->path);
    v->sws = sws_getContext(v->w, v->h, AV_PIX_FMT_RGB24, v->w, v->h, v->enc->pix_fmt, SWS_BILINEAR, NULL, NULL, NULL);
    if (!v->sws)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: cannot convert RGB to %s", v->path, av_get_pix_fmt_name(v->enc->pix_fmt));
    return SD_OK;
}

static void sink_free(sd_video_sink *v)
{
    sws_freeContext(v->sws);
    av_packet_free(&v->pkt);
    av_frame_free(&v->frame);
    avcodec_free_context(&v->enc);
    if (v->oc) {
        if (v->file_open)
            avio_closep(&v->oc->pb);
        avformat_free_context(v->oc);
    }
    free(v->path);
    free(v);
}

sd_status sd_video_sink_open(const char *path, int width, int height, double fps, sd_video_sink **out)
{
    *out = NULL;
    if (!path || !*path)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "video output: empty path");
    if (width <= 0 || height <= 0 || width > SD_IMAGE_MAX_SIDE || height > SD_IMAGE_MAX_SIDE)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: invalid frame size %dx%d", path, width, height);
    pthread_once(&g_once, ff_init);
    sd_video_sink *v = sd_calloc(1, sizeof *v);
    if (!v)
        return SD_ERR_OUT_OF_MEMORY;
    v->path = sd_strdup(path);
    v->w = width;
    v->h = height;
    v->folder = sd_video_path_is_folder(path);
    sd_status st = v->path ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    if (st == SD_OK && v->folder) {
        v->codec = "png";
        st = sd_make_dir(path);
    } else if (st == SD_OK) {
        st = open_encoder(v, fps > 0 ? fps : 30.0);
    }
    if (st != SD_OK) {
        bool created = v->file_open && !v->live;
        sink_free(v);
        if (created)
            remove(path);
        return st;
    }
    *out = v;
    return SD_OK;
}

/* Sends a frame (NULL: drain) and writes every packet the encoder gives back. */
static sd_status encode(sd_video_sink *v, AVFrame *f)
{
    char eb[256];
    int r = avcodec_send_frame(v->enc, f);
    if (r < 0 && !(f == NULL && r == AVERROR_EOF))
        return sd_fail(SD_ERR_INTERNAL, "%s: encoder refused frame %lld (%s)", v->path, (long long)v->n,
                       averr(r, eb, sizeof eb));
    for (;;) {
        r = avcodec_receive_packet(v->enc, v->pkt);
        if (r == AVERROR(EAGAIN) || r == AVERROR_EOF)
            return SD_OK;
        if (r < 0)
            return sd_fail(SD_ERR_INTERNAL, "%s: encoding failed (%s)", v->path, averr(r, eb, sizeof eb));
        av_packet_rescale_ts(v->pkt, v->enc->time_base, v->st->time_base);
        v->pkt->stream_index = v->st->index;
        r = av_interleaved_write_frame(v->oc, v->pkt);
        if (r < 0)
            return sd_fail(SD_ERR_IO, "%s: write failed (%s)", v->path, averr(r, eb, sizeof eb));
    }
}

sd_status sd_video_sink_write(sd_video_sink *v, const sd_rgb *img)
{
    if (!v || !img || !img->data)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "video output: empty frame");
    if (img->width != v->w || img->height != v->h)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: frame is %dx%d, the output is %dx%d", v->path, img->width,
                       img->height, v->w, v->h);
    if (v->folder) {
        char name[32];
        snprintf(name, sizeof name, "frame_%06lld.png", (long long)v->n);
        char *full = sd_path_join(v->path, name);
        if (!full)
            return SD_ERR_OUT_OF_MEMORY;
        sd_status st = sd_rgb_save_png(full, img, NULL);
        free(full);
        if (st == SD_OK)
            v->n++;
        return st;
    }
    char eb[256];
    int r = av_frame_make_writable(v->frame);
    if (r < 0)
        return sd_fail(SD_ERR_OUT_OF_MEMORY, "%s: %s", v->path, averr(r, eb, sizeof eb));
    const uint8_t *src[4] = {img->data, NULL, NULL, NULL};
    int ls[4] = {3 * v->w, 0, 0, 0};
    sws_scale(v->sws, src, ls, 0, v->h, v->frame->data, v->frame->linesize);
    if (v->wallclock) {
        double now = sd_time_now();
        if (v->n == 0)
            v->t0 = now;
        int64_t pts = (int64_t)((now - v->t0) * 1000.0);
        v->frame->pts = v->n && pts <= v->last_pts ? v->last_pts + 1 : pts;
        v->last_pts = v->frame->pts;
    } else {
        v->frame->pts = v->n;
    }
    SD_TRY(encode(v, v->frame));
    v->n++;
    return SD_OK;
}

sd_status sd_video_sink_close(sd_video_sink *v)
{
    if (!v)
        return SD_OK;
    sd_status st = SD_OK;
    if (!v->folder && v->header_written) {
        st = encode(v, NULL);
        int r = av_write_trailer(v->oc);
        if (r < 0 && st == SD_OK) {
            char eb[256];
            st = sd_fail(SD_ERR_IO, "%s: cannot finish the file (%s)", v->path, averr(r, eb, sizeof eb));
        }
    }
    sink_free(v);
    return st;
}

const char *sd_video_sink_codec(const sd_video_sink *v) { return v->codec; }

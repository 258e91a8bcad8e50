/* An out-of-tree program built against the INSTALLED streamdiff package
 * (tests/install_consumer.sh: `cmake --install`, then pkg-config): it sees
 * only <streamdiff.h>. Loads a model, makes one txt2img image and one stream
 * frame, saves the image as PNG.
 *   consumer MODEL_DIR OUT.png */
#include <streamdiff.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, sd_status s)
{
    fprintf(stderr, "consumer: %s: %s: %s\n", what, sd_status_name(s), sd_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: consumer MODEL_DIR OUT.png\n");
        return 2;
    }
    printf("consumer: streamdiff %s\n", sd_version());
    sd_model_params mp;
    sd_model_default_params(&mp);
    mp.n_threads = 2;
    sd_model *m = NULL;
    sd_status s = sd_model_load(argv[1], &mp, &m);
    if (s != SD_OK)
        return fail("sd_model_load", s);

    sd_gen_params gp;
    sd_gen_default_params(&gp);
    gp.prompt = "a red fox";
    gp.width = gp.height = 32;
    gp.steps = 2;
    gp.seed = 7;
    sd_image img = {0};
    if ((s = sd_txt2img(m, &gp, &img)) != SD_OK) {
        sd_model_free(m);
        return fail("sd_txt2img", s);
    }
    char *params = sd_gen_parameters_text(m, &gp, false);
    s = sd_image_save_png(argv[2], &img, params);
    free(params);
    printf("consumer: txt2img %dx%d -> %s\n", img.width, img.height, argv[2]);
    sd_image_free(&img);
    if (s != SD_OK) {
        sd_model_free(m);
        return fail("sd_image_save_png", s);
    }

    sd_stream_params sp;
    sd_stream_default_params(&sp);
    sp.width = sp.height = 32;
    sp.use_taesd = false;
    sd_stream *st = NULL;
    if ((s = sd_stream_create(m, &sp, &st)) == SD_OK && (s = sd_stream_set_prompt(st, "a fox", NULL)) == SD_OK)
        s = sd_stream_txt2img(st, &img);
    sd_stream_free(st);
    sd_model_free(m);
    if (s != SD_OK)
        return fail("stream txt2img", s);
    int ok = img.width == 32 && img.height == 32 && img.data != NULL;
    printf("consumer: stream frame %dx%d\n", img.width, img.height);
    sd_image_free(&img);
    return ok ? 0 : 1;
}

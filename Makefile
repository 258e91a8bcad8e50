# streamdiff: `make run` installs, builds and runs the main job; `make test` runs all tests.
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?=

PREFIX     ?= /usr/local

.PHONY: all deps test-deps build run selfcheck test test-asan bench install clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# The real-time demo in the foreground: prints the URL to open (Ctrl-C stops).
# Model: STREAMDIFF_MODEL, else sd-turbo (then LCM_Dreamshaper_v7) from the local
# Hugging Face cache, else the bundled tiny test model. See scripts/run-demo.sh.
run: build
	@bash scripts/run-demo.sh $(BUILD)

selfcheck: build
	./$(BUILD)/streamdiff --version
	./$(BUILD)/streamdiff selfcheck

# Chromium + Playwright for the browser test of the demo (tests/cli_server_e2e.sh).
test-deps:
	@bash scripts/install-test-deps.sh

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_FLAGS)

# AddressSanitizer + UndefinedBehaviorSanitizer build of the library and tests.
test-asan: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSD_SANITIZE=ON -DSD_CUDA=OFF $(CMAKE_FLAGS)
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(BUILD_ASAN) --output-on-failure -j $(JOBS) -LE slow $(CTEST_FLAGS)

# streamdiff.h, libstreamdiff.so/.a, streamdiff.pc, bin/streamdiff under $(PREFIX) (cmake/install.cmake)
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	./$(BUILD)/streamdiff bench ops

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)

# vllm.c — plain Makefile.
#   make            build/vllmc and build/libvllmc.a
#   make test       build and run every test; last line "N passed, N failed"
#   make SAN=1 test AddressSanitizer + UndefinedBehaviorSanitizer build (build-san/)
#   make bench      benchmarks (see BENCHMARKS.md)
#   make CROSS=aarch64-linux-gnu-   cross build for Arm (build-aarch64/)
#   make CUDA=1     with the CUDA backend (build-cuda/; nvcc, cuBLASLt; CUDA_HOME=/usr/local/cuda)
# Sources are found by wildcard: a new .c under src/ needs no edit here.

CROSS   ?=
CC      := $(CROSS)gcc
ifeq ($(origin CC_OVERRIDE),command line)
CC      := $(CC_OVERRIDE)
endif
SAN     ?= 0
CUDA    ?= 0
ifneq ($(CROSS),)
BUILD   ?= build-$(patsubst %-,%,$(firstword $(subst -, ,$(CROSS))))
else ifeq ($(CUDA),1)
BUILD   ?= build-cuda
else ifeq ($(SAN),1)
BUILD   ?= build-san
else
BUILD   ?= build
endif

ARCH    := $(shell $(CC) -dumpmachine | cut -d- -f1)
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu17 -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-format-truncation -fno-strict-aliasing \
           -pthread -Iinclude -Isrc -MMD -MP
LDLIBS  := -lm -lpthread
# Debian libraries (DESIGN.md 10): libmicrohttpd (HTTP), PCRE2 (tokenizer
# regexes), utf8proc (normalization), libcrypto (SHA-256 prefix hashes),
# xxhash, jansson (JSON). A cross build links statically against the
# multiarch packages (lib*-dev:arm64) so qemu-aarch64 needs no sysroot.
LDLIBS  += -lmicrohttpd -lpcre2-8 -lutf8proc -lcrypto -lxxhash -ljansson
ifneq ($(CROSS),)
LDFLAGS += -static
endif
ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Files named *_avx512.c / *_avx2.c / *_neon.c get their ISA flags here; the
# dispatcher picks one at run time from the CPU's features.
ifeq ($(ARCH),x86_64)
ISA_AVX512 := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mfma -mf16c -mavx2
ISA_AVX2   := -mavx2 -mfma -mf16c
ISA_NEON   :=
else
ISA_AVX512 :=
ISA_AVX2   :=
ISA_NEON   := -march=armv8.2-a+fp16
endif

SRC_ALL := $(shell find src -name '*.c' | sort)
ifeq ($(ARCH),x86_64)
SRC_ALL := $(filter-out %_neon.c,$(SRC_ALL))
else
SRC_ALL := $(filter-out %_avx512.c %_avx2.c,$(SRC_ALL))
endif
# The CUDA backend (src/backend/cuda/): without CUDA=1 only its stub.c (entry
# points that say it was not built), so nothing needs CUDA; with CUDA=1 its
# .c files (gcc, CUDA headers) and .cu files (nvcc: sm_90 machine code, plus
# PTX the driver compiles for other GPUs: compute_90 for newer ones, with
# Hopper's programmatic dependent launch; compute_80 for Ampere and Ada),
# linked against cudart (static) and cuBLASLt.
SRC_ALL := $(filter-out src/backend/cuda/%,$(SRC_ALL))
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
ifeq ($(CUDA),1)
SRC_ALL   += $(filter-out src/backend/cuda/stub.c,$(wildcard src/backend/cuda/*.c))
CU_SRC    := $(sort $(wildcard src/backend/cuda/*.cu))
NVCCFLAGS ?= -O3 -g -lineinfo
# CUDA_GENCODE="-gencode arch=compute_80,code=compute_80": PTX only, the
# generic fallback build (tools/gpu/ptx_fallback.sh)
CUDA_GENCODE ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
                -gencode arch=compute_80,code=compute_80
NVCCFLAGS += -std=c++17 -Isrc -Iinclude -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-pthread $(CUDA_GENCODE)
LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcudart_static -ldl -lrt -lstdc++
else
SRC_ALL   += src/backend/cuda/stub.c
CU_SRC    :=
endif
SRC_MAIN := $(filter src/cli/%,$(SRC_ALL))
SRC_LIB  := $(filter-out $(SRC_MAIN),$(SRC_ALL))
OBJ_LIB  := $(SRC_LIB:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
OBJ_MAIN := $(SRC_MAIN:%.c=$(BUILD)/%.o)

TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

BENCH_SRC := $(sort $(wildcard tests/bench/*.c))
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

.PHONY: all test unit bench clean fuzz fuzz-request deps
all: $(BUILD)/vllmc $(BUILD)/libvllmc.a

$(BUILD)/libvllmc.a: $(OBJ_LIB)
	@mkdir -p $(dir $@)
	@rm -f $@
	$(CROSS)ar rcs $@ $^

$(BUILD)/vllmc: $(OBJ_MAIN) $(BUILD)/libvllmc.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_AVX512) -c -o $@ $<
$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_AVX2) -c -o $@ $<
$(BUILD)/%_neon.o: %_neon.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_NEON) -c -o $@ $<
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/src/backend/cuda/%.o: CFLAGS += -I$(CUDA_HOME)/include
$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libvllmc.a tests/harness.h tests/fixture.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(BUILD)/libvllmc.a $(LDLIBS)

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libvllmc.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libvllmc.a $(LDLIBS)

# Every test binary prints "## N passed, N failed"; tests/run.sh sums them.
unit: $(TEST_BIN) $(BUILD)/vllmc
# `make test`: set-up first (packages, npm test deps, tokenizer files:
# tools/setup.sh), then build and run everything.
test:
	@bash tools/setup.sh
	@$(MAKE) --no-print-directory unit
	@BUILD=$(BUILD) bash tests/run.sh $(TEST_BIN)

bench: $(BENCH_BIN) $(BUILD)/vllmc
	@BUILD=$(BUILD) bash tests/bench/run.sh

# libFuzzer target for the safetensors header parser (clang only).
fuzz:
	@mkdir -p build-fuzz
	clang -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	    -o build-fuzz/fuzz_safetensors tests/fuzz/fuzz_safetensors.c \
	    $(filter src/io/% src/util/%,$(SRC_LIB)) $(LDLIBS)

# libFuzzer target for the server's request parser (clang only).
fuzz-request:
	@mkdir -p build-fuzz
	clang -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	    -o build-fuzz/fuzz_request tests/fuzz/fuzz_request.c src/server/protocol.c src/util/util.c $(LDLIBS)

clean:
	rm -rf build build-san build-aarch64 build-fuzz build-cuda

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# libFuzzer target for chat templates (clang only): compile + render arbitrary
# templates. Seed it with tests/fixtures/templates/models/*.jinja.
.PHONY: fuzz-template
fuzz-template:
	@mkdir -p build-fuzz
	clang -std=gnu17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude -Isrc \
	    -o build-fuzz/fuzz_chat_template tests/fuzz/fuzz_chat_template.c \
	    $(filter src/text/jinja_%.c src/text/chat_template.c src/util/util.c,$(SRC_LIB)) $(LDLIBS)

# ---- make run / install / examples ------------------------------------------
#   make run                  install missing packages (tools/deps.sh), build, serve
#                             models/demo on 127.0.0.1:8000 (HOST=, PORT=, MODEL= override)
#   make install PREFIX=DIR   bin/vllmc, lib/libvllmc.a, include/vllmc.h,
#                             lib/pkgconfig/vllmc.pc, share/vllmc/models/demo (DESTDIR ok)
#   make examples             $(BUILD)/examples/* from examples/*.c
HOST    ?= 127.0.0.1
PORT    ?= 8000
MODEL   ?= models/demo
PREFIX  ?= /usr/local
DESTDIR ?=
VLLMC_VERSION := $(shell sed -n 's/^\#define VLLMC_VERSION "\(.*\)"/\1/p' include/vllmc.h)
EXAMPLE_BIN := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))

.PHONY: run install uninstall examples
run:
	@bash tools/deps.sh
	@$(MAKE) --no-print-directory -j2 $(BUILD)/vllmc
	@bash tools/demo/run.sh $(BUILD)/vllmc $(MODEL) $(HOST) $(PORT)

install: $(BUILD)/vllmc $(BUILD)/libvllmc.a
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	    $(DESTDIR)$(PREFIX)/share/vllmc/models/demo
	install -m 755 $(BUILD)/vllmc $(DESTDIR)$(PREFIX)/bin/vllmc
	install -m 644 $(BUILD)/libvllmc.a $(DESTDIR)$(PREFIX)/lib/libvllmc.a
	install -m 644 include/vllmc.h $(DESTDIR)$(PREFIX)/include/vllmc.h
	install -m 644 $(wildcard models/demo/*) $(DESTDIR)$(PREFIX)/share/vllmc/models/demo/
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
	    'Name: vllmc' 'Description: vllm.c LLM serving engine (CPU)' 'Version: $(VLLMC_VERSION)' \
	    'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -lvllmc' 'Libs.private: $(LDLIBS)' \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/vllmc.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/vllmc $(DESTDIR)$(PREFIX)/lib/libvllmc.a $(DESTDIR)$(PREFIX)/include/vllmc.h \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig/vllmc.pc
	rm -rf $(DESTDIR)$(PREFIX)/share/vllmc

examples: $(EXAMPLE_BIN)
$(BUILD)/examples/%: examples/%.c $(BUILD)/libvllmc.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libvllmc.a $(LDLIBS)

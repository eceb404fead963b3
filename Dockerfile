# syntax=docker/dockerfile:1
#
# memaudit server image: a build stage that compiles memaudit with the same
# scripts a developer uses (scripts/setup.sh + scripts/build.sh), and a slim
# runtime stage that holds only the runtime libraries and three binaries:
#
#   /usr/local/bin/memaudit-server   the gRPC service (ENTRYPOINT)
#   /usr/local/bin/memaudit          the CLI (health, models, audit, ...)
#   /usr/local/bin/memaudit-toy      writes toy model repositories
#   /models                          bundled toy repository (toy2d, toy8d),
#                                    unless BUNDLE_TOY_MODELS=false
#
# Ports: 8500 gRPC (incl. grpc.health.v1 and reflection), 9090 HTTP /metrics.
#
# ---------------------------------------------------------------------------
# CPU image (default): Debian 12, Debian's LibTorch 1.13 (CPU) + OpenBLAS.
#
#   docker build -t memaudit:0.1.0 .
#   docker run --rm -p 8500:8500 -p 9090:9090 memaudit:0.1.0
#   docker run --rm -p 8500:8500 -p 9090:9090 -v "$PWD/models:/models:ro" memaudit:0.1.0
#
# Build arguments:
#   BUILD_IMAGE        base of the build stage           (debian:bookworm)
#   RUNTIME_IMAGE      base of the runtime stage         (debian:bookworm-slim)
#   LIBTORCH_VARIANT   debian | cuda                      (debian)
#   RUNTIME_PACKAGES   runtime apt packages; the default is the Debian 12 list
#                      below; "auto" = the packages that own the shared
#                      libraries the binaries link (derived in the build stage
#                      with readelf + dpkg -S) plus libopenblas0-openmp
#   BUNDLE_TOY_MODELS  true | false: train toy2d/toy8d into /models   (true)
#   BUILD_JOBS         parallel compile jobs (~1 GiB RAM each)         (2)
#
# ---------------------------------------------------------------------------
# CUDA image (LIBTORCH_VARIANT=cuda): Debian 13 and Debian's own CUDA
# packages, nothing from outside Debian's archive. Both stages enable the
# contrib and non-free components; the build stage runs
# `MEMAUDIT_LIBTORCH=cuda scripts/setup.sh` (libtorch-cuda-dev 2.6,
# python3-torch-cuda, nvidia-cuda-toolkit 12.4), CMake finds the CUDA
# LibTorch where the package puts it and compiles core/device/device_memory.cc's
# CUDA branch (memaudit_device_memory_bytes{kind=allocated|reserved|peak} and
# admission against the GPU's free memory, docs/SERVICE.md "Memory limits").
# The runtime stage installs the packages that own the linked libraries
# (RUNTIME_PACKAGES=auto: libtorch-cuda-2.6 and the rest of Debian 13's
# list); the NVIDIA driver comes from the node (NVIDIA container toolkit).
# Debian's nvidia-cudnn package (a dependency of libtorch-cuda) downloads
# cuDNN from developer.download.nvidia.com while it installs, so both stages
# need that host; on the development machines it does not answer, so this
# image has not been built here (the same packages were unpacked in a Debian
# 13 root and core/ with its CUDA branch compiled against them; the link
# stopped on the missing libcudnn.so.9: docs/GUIDE.md "Platforms").
#   docker build -t memaudit:0.1.0-cuda \
#     --build-arg LIBTORCH_VARIANT=cuda \
#     --build-arg BUILD_IMAGE=debian:trixie \
#     --build-arg RUNTIME_IMAGE=debian:trixie-slim \
#     --build-arg RUNTIME_PACKAGES=auto .
#   docker run --rm --gpus all -p 8500:8500 -p 9090:9090 memaudit:0.1.0-cuda \
#     --model_repository=/models --listen=0.0.0.0:8500 \
#     --metrics_listen=0.0.0.0:9090 --device=cuda:0
# ---------------------------------------------------------------------------

ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

###############################################################################
FROM ${BUILD_IMAGE} AS build

ARG LIBTORCH_VARIANT=debian
ARG BUNDLE_TOY_MODELS=true
ARG BUILD_JOBS=2

SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

WORKDIR /src

# setup.sh first (its own layer): the package layer survives source edits.
# The CUDA variant needs Debian 13 with contrib and non-free (deb822 sources).
COPY scripts/setup.sh scripts/setup.sh
RUN case "${LIBTORCH_VARIANT:-debian}" in \
      debian) libtorch=cpu ;; \
      cuda) libtorch=cuda; \
        . /etc/os-release; \
        [[ "${VERSION_CODENAME:-}" == trixie ]] || { echo "LIBTORCH_VARIANT=cuda needs BUILD_IMAGE=debian:trixie (Debian 13 ships libtorch-cuda-dev), got ${PRETTY_NAME:-unknown}" >&2; exit 1; }; \
        sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' /etc/apt/sources.list.d/debian.sources ;; \
      *) echo "LIBTORCH_VARIANT must be debian or cuda, got '${LIBTORCH_VARIANT}'" >&2; exit 1 ;; \
    esac; \
    apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates binutils \
 && MEMAUDIT_LIBTORCH="$libtorch" scripts/setup.sh \
 && rm -rf /var/lib/apt/lists/*

COPY . /src

RUN --mount=type=cache,target=/root/.cache/ccache \
    MEMAUDIT_BUILD_JOBS="${BUILD_JOBS:-2}" scripts/build.sh -DMEMAUDIT_BUILD_TESTS=OFF; \
    if [[ "${LIBTORCH_VARIANT:-debian}" == cuda ]]; then \
      grep -Eq '^C10_CUDA_LIBRARY:FILEPATH=/' build/CMakeCache.txt \
        || { echo "CMake found no CUDA LibTorch (C10_CUDA_LIBRARY unset): the image would run on the CPU only" >&2; exit 1; }; \
    fi; \
    install -d /opt/memaudit/bin /opt/memaudit/models /opt/memaudit/share; \
    install -m 0755 build/server/memaudit-server build/client/memaudit \
      build/tools/toy/memaudit-toy /opt/memaudit/bin/

# Optional bundled toy repository (the same models as scripts/demo.sh).
RUN if [[ "${BUNDLE_TOY_MODELS:-true}" == true ]]; then \
      /opt/memaudit/bin/memaudit-toy train --repository /opt/memaudit/models \
        --name toy2d --dim 2 --steps 12000 | tail -n 1; \
      /opt/memaudit/bin/memaudit-toy train --repository /opt/memaudit/models \
        --name toy8d --dim 8 --intrinsic-dim 3 --steps 12000 | tail -n 1; \
    fi

# The apt packages that own the libraries the binaries link directly (for
# RUNTIME_PACKAGES=auto, and to compare with the explicit list below).
RUN for bin in /opt/memaudit/bin/*; do \
      for soname in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do \
        path=$(ldd "$bin" | awk -v s="$soname" '$1 == s { print $3 }'); \
        [[ -n "$path" ]] || continue; \
        for candidate in "$path" "$(readlink -f "$path")" "${path#/usr}"; do \
          if owner=$(dpkg -S "$candidate" 2>/dev/null); then \
            echo "${owner%%:*}"; break; \
          fi; \
        done; \
      done; \
    done | sort -u > /opt/memaudit/share/runtime-packages.derived \
 && echo "runtime packages (derived):" $(cat /opt/memaudit/share/runtime-packages.derived)

###############################################################################
FROM ${RUNTIME_IMAGE} AS runtime

# Debian 12 runtime packages, one per -dev package the build uses (from
# `apt-cache show <dev> | grep Depends`): libtorch-dev -> libtorch1.13,
# libprotobuf-dev -> libprotobuf32, libabsl-dev -> libabsl20220623,
# libgrpc++-dev -> libgrpc++1.51 (+ libgrpc++_reflection) and libgrpc29,
# prometheus-cpp-dev -> libprometheus-cpp-core1.0, libcpp-httplib-dev ->
# libcpp-httplib0.11 (a compiled library in Debian), libpng-dev -> libpng16-16,
# libssl-dev -> libssl3, libicu-dev -> libicu72 (the tokenizer), libsqlite3-dev
# -> libsqlite3-0 (durable jobs, --state_dir);
# libopenblas0-openmp is torch's BLAS (libblas.so.3 alternative, ~15x faster
# than the reference BLAS). CLI11, Eigen, Spectra and
# nlohmann-json are header-only. The ldd check below fails the build if any
# library is still missing.
ARG RUNTIME_PACKAGES="libtorch1.13 libopenblas0-openmp libprotobuf32 libabsl20220623 libgrpc++1.51 libgrpc29 libprometheus-cpp-core1.0 libcpp-httplib0.11 libpng16-16 libssl3 libicu72 libsqlite3-0 ca-certificates"

SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

ARG LIBTORCH_VARIANT=debian
COPY --from=build /opt/memaudit/share/runtime-packages.derived /usr/local/share/memaudit/runtime-packages.derived
RUN if [[ "${LIBTORCH_VARIANT:-debian}" == cuda ]]; then \
      sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' /etc/apt/sources.list.d/debian.sources; \
    fi; \
    packages="${RUNTIME_PACKAGES:-auto}"; \
    if [[ "$packages" == auto ]]; then \
      packages="$(cat /usr/local/share/memaudit/runtime-packages.derived) libopenblas0-openmp"; \
    fi; \
    apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends $packages \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/memaudit/bin/ /usr/local/bin/
COPY --from=build /opt/memaudit/models/ /models/

# Fail the build, not the pod, when a runtime library is missing.
RUN for bin in /usr/local/bin/memaudit-server /usr/local/bin/memaudit /usr/local/bin/memaudit-toy; do \
      if ldd "$bin" | grep 'not found'; then \
        echo "missing runtime libraries for $bin (RUNTIME_PACKAGES)" >&2; exit 1; \
      fi; \
    done

# Non-root; numeric so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 memaudit \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp \
      --shell /usr/sbin/nologin memaudit
USER 10001:10001
WORKDIR /tmp
ENV HOME=/tmp

EXPOSE 8500 9090

ENTRYPOINT ["/usr/local/bin/memaudit-server"]
CMD ["--model_repository=/models", "--listen=0.0.0.0:8500", "--metrics_listen=0.0.0.0:9090"]

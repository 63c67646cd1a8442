# syntax=docker/dockerfile:1
# cutover's image: built from source on Debian 12, run on Debian 12 with only the runtime
# libraries. Both stages install from the one package list of the repository
# (scripts/packages/build.txt, runtime.txt), which scripts/deps.sh reads for CI too.
#   docker build -t cutover .
# Runs as uid 10001 and works with a read-only root filesystem: it writes only to its spool
# (spool_dir, /var/spool/cutover: mount a volume there). The configuration is read from
# $CUTOVER_CONFIG (/etc/cutover/cutover.json: mount it there). No HEALTHCHECK: Kubernetes
# probes /healthz and /readyz on the admin port. scripts/image-check.sh checks the runtime
# stage's root filesystem without a Docker engine.

FROM debian:bookworm-slim AS build
COPY scripts/packages/build.txt /tmp/build.txt
RUN apt-get update \
    && sed 's/#.*//' /tmp/build.txt | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUTOVER_TESTS=OFF \
    && cmake --build /build -j"$(nproc)" --target cutover \
    && strip --strip-debug /build/cmd/cutover

FROM debian:bookworm-slim
RUN --mount=type=bind,source=scripts/packages/runtime.txt,target=/tmp/runtime.txt \
    apt-get update \
    && sed 's/#.*//' /tmp/runtime.txt | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 cutover \
    && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin cutover \
    && install -d -o 10001 -g 10001 -m 0750 /var/spool/cutover \
    && install -d -m 0755 /etc/cutover
COPY --from=build /build/cmd/cutover /usr/local/bin/cutover
ENV CUTOVER_CONFIG=/etc/cutover/cutover.json
USER 10001:10001
VOLUME ["/var/spool/cutover"]
EXPOSE 8081 9090
ENTRYPOINT ["cutover"]
CMD ["proxy"]
